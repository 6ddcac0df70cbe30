"""OpenMetrics (Prometheus) exposition of the KPIs and the projection lag.

The KPI figures are read from the read-models into a fresh registry, so a scrape always shows
what the API shows; the API keeps that part per read-model version like any KPI answer
(``kpi_exposition``: a gauge per procedure is slow to compute), while the
projection lag is asked of JetStream at every scrape (``lag_exposition``). Ratios are exact
(not rounded); the API's rounding is for people.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

from services.reporting import store
from services.reporting.lag import ConsumerLag
from services.reporting.store import ApplicationFilter, Conn, PaymentFilter

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


EOF = b"# EOF\n"


async def kpi_exposition(conn: Conn) -> bytes:
    """The KPI gauges, without the closing ``# EOF`` (``lag_exposition`` follows them)."""
    reg = CollectorRegistry(auto_describe=True)
    await _application_gauges(conn, reg)
    await _payment_gauges(conn, reg)
    text = bytes(generate_latest(reg))  # type: ignore[no-untyped-call]
    assert text.endswith(EOF)
    return text[: -len(EOF)]


async def _application_gauges(conn: Conn, reg: CollectorRegistry) -> None:
    applications = Gauge(
        "cityhall_applications",
        "Applications received (申請件数), by channel.",
        ["channel"],
        registry=reg,
    )
    usage = Gauge(
        "cityhall_online_usage_ratio",
        "Online usage rate (オンライン利用率): online applications / all applications.",
        registry=reg,
    )
    usage_by_procedure = Gauge(
        "cityhall_online_usage_by_procedure_ratio",
        "Online usage rate of each procedure (手続き).",
        ["procedure"],
        registry=reg,
    )
    [total] = await store.applications_by(conn, [], ApplicationFilter())
    for channel in ("online", "counter", "mail"):
        applications.labels(channel).set(total[channel])
    usage.set(_ratio(total["online"], total["total"]))
    for r in await store.applications_by(conn, ["procedure_code"], ApplicationFilter()):
        usage_by_procedure.labels(r["procedure_code"]).set(_ratio(r["online"], r["total"]))


async def _payment_gauges(conn: Conn, reg: CollectorRegistry) -> None:
    payments = Gauge(
        "cityhall_payments",
        "Payments standing (captures less refunds and voids), by method.",
        ["method"],
        registry=reg,
    )
    payments_yen = Gauge(
        "cityhall_payments_yen",
        "Yen of payments standing (gross revenue), by method.",
        ["method"],
        registry=reg,
    )
    share_count = Gauge(
        "cityhall_cashless_share_by_count_ratio",
        "Cashless share (キャッシュレス比率) by count, all facilities.",
        registry=reg,
    )
    share_amount = Gauge(
        "cityhall_cashless_share_by_amount_ratio",
        "Cashless share by amount (yen), all facilities.",
        registry=reg,
    )
    facility_share = Gauge(
        "cityhall_cashless_share_by_facility_ratio",
        "Cashless share by count at each facility.",
        ["facility"],
        registry=reg,
    )
    for r in await store.payments_by(conn, ["method"], PaymentFilter()):
        payments.labels(r["method"]).set(r["count"])
        payments_yen.labels(r["method"]).set(r["amount_yen"])
    [pay] = await store.payments_by(conn, [], PaymentFilter())
    share_count.set(_ratio(pay["cashless_count"], pay["count"]))
    share_amount.set(_ratio(pay["cashless_amount_yen"], pay["amount_yen"]))
    for r in await store.payments_by(conn, ["facility_code"], PaymentFilter()):
        facility_share.labels(r["facility_code"]).set(_ratio(r["cashless_count"], r["count"]))


def lag_exposition(lags: Sequence[ConsumerLag]) -> bytes:
    """The projection lag gauges, closing the exposition (``# EOF``)."""
    reg = CollectorRegistry(auto_describe=True)
    behind = Gauge(
        "cityhall_projection_events_behind",
        "Events in the stream not yet applied to the read-models.",
        ["consumer"],
        registry=reg,
    )
    seconds = Gauge(
        "cityhall_projection_lag_seconds",
        "Age of the oldest event not yet applied (0 when none).",
        ["consumer"],
        registry=reg,
    )
    for lag in lags:
        behind.labels(lag.consumer).set(lag.events_behind)
        seconds.labels(lag.consumer).set(lag.seconds_behind)
    return bytes(generate_latest(reg))  # type: ignore[no-untyped-call]
