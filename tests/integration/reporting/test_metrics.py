"""The OpenMetrics endpoint: KPI gauges and the projection lag, as Prometheus reads them."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.integration.reporting.test_kpi_projections import feed, settled


async def test_metrics_show_the_kpis_and_the_lag_in_openmetrics(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    resp = await reporting.http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    assert samples[("cityhall_applications", (("channel", "online"),))] == 3
    assert samples[("cityhall_applications", (("channel", "mail"),))] == 2
    assert samples[("cityhall_online_usage_ratio", ())] == 0.5
    assert (
        samples[("cityhall_online_usage_by_procedure_ratio", (("procedure", "JUMINHYO"),))] == 0.6
    )
    assert samples[("cityhall_payments", (("method", "cash"),))] == 2
    assert samples[("cityhall_payments_yen", (("method", "qr"),))] == 1050
    assert samples[("cityhall_cashless_share_by_count_ratio", ())] == 4 / 6
    assert samples[("cityhall_cashless_share_by_amount_ratio", ())] == 2500 / 3800
    assert (
        samples[("cityhall_cashless_share_by_facility_ratio", (("facility", "bijutsukan"),))] == 0.5
    )
    lag = ("cityhall_projection_events_behind", (("consumer", "reporting_payments"),))
    assert samples[lag] == 0
    assert ("cityhall_projection_lag_seconds", (("consumer", "reporting_applications"),)) in samples
