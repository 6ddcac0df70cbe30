"""Reporting's KPIs from known events, on real JetStream and PostgreSQL."""

from __future__ import annotations

import csv
import io
from typing import Any

from nats.js import JetStreamContext

from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.reporting.events import APPLICATIONS, PAYMENTS, application, capture


async def feed(js: JetStreamContext, namespace: str) -> None:
    for row in APPLICATIONS:
        await publish_envelope(js, namespace, application(*row))
    for row in PAYMENTS:
        await publish_envelope(js, namespace, capture(*row))


async def settled(reporting: Any) -> None:
    async def all_counted() -> bool:
        usage = (await reporting.http.get("/kpi/online-usage")).json()
        pays = (await reporting.http.get("/kpi/cashless-share")).json()
        return bool(usage["total"]["total"] == 6 and pays["total"]["count"] == 6)

    await wait_for(all_counted)


async def test_online_usage_is_counted_by_procedure_and_tokyo_month(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    body = (await reporting.http.get("/kpi/online-usage")).json()
    assert body["total"] == {
        "online": 3,
        "counter": 1,
        "mail": 2,
        "total": 6,
        "online_share": 0.5,
    }
    assert body["by_month"] == [
        {"month": "2026-10", "online": 2, "counter": 1, "mail": 1, "total": 4, "online_share": 0.5},
        {"month": "2026-11", "online": 1, "counter": 0, "mail": 1, "total": 2, "online_share": 0.5},
    ]
    assert body["by_procedure"] == [
        {
            "procedure_code": "JUMINHYO",
            "online": 3,
            "counter": 1,
            "mail": 1,
            "total": 5,
            "online_share": 0.6,
        },
        {
            "procedure_code": "KOSEKI",
            "online": 0,
            "counter": 0,
            "mail": 1,
            "total": 1,
            "online_share": 0.0,
        },
    ]
    november = (
        await reporting.http.get("/kpi/online-usage", params={"from": "2026-11", "to": "2026-11"})
    ).json()
    assert november["total"]["total"] == 2
    juminhyo_october = (
        await reporting.http.get(
            "/kpi/online-usage", params={"procedure": "JUMINHYO", "to": "2026-10"}
        )
    ).json()
    assert juminhyo_october["total"] == {
        "online": 2,
        "counter": 1,
        "mail": 0,
        "total": 3,
        "online_share": 0.6667,
    }
    by_channel = (await reporting.http.get("/kpi/applications/by-channel")).json()
    assert by_channel == {"online": 3, "counter": 1, "mail": 2, "total": 6, "online_share": 0.5}


async def test_cashless_share_is_counted_by_method_facility_month_and_day(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    body = (await reporting.http.get("/kpi/cashless-share")).json()
    assert body["total"] == {
        "count": 6,
        "amount_yen": 3800,
        "cashless_count": 4,
        "cashless_amount_yen": 2500,
        "cashless_share_by_count": 0.6667,
        "cashless_share_by_amount": 0.6579,
    }
    assert body["by_method"] == [
        {"method": "cash", "brand": None, "count": 2, "amount_yen": 1300},
        {"method": "credit", "brand": "Visa", "count": 1, "amount_yen": 1000},
        {"method": "emoney", "brand": "交通系IC", "count": 1, "amount_yen": 450},
        {"method": "qr", "brand": "PayPay", "count": 1, "amount_yen": 300},
        {"method": "qr", "brand": "d払い", "count": 1, "amount_yen": 750},
    ]
    facilities = {f["facility_code"]: f for f in body["by_facility"]}
    assert facilities["bijutsukan"]["cashless_share_by_count"] == 0.5
    assert facilities["shiminka"]["count"] == 4
    assert facilities["shiminka"]["cashless_amount_yen"] == 1500
    assert facilities["shiminka"]["cashless_share_by_amount"] == 0.8333
    months = {m["month"]: (m["count"], m["amount_yen"]) for m in body["by_month"]}
    assert months == {"2026-10": (4, 2050), "2026-11": (2, 1750)}
    days = {d["day"]: d["count"] for d in body["by_day"]}
    assert days == {
        "2026-10-05": 2,
        "2026-10-06": 1,
        "2026-10-31": 1,
        "2026-11-01": 1,
        "2026-11-02": 1,
    }

    qr = (await reporting.http.get("/kpi/cashless-share", params={"method": "qr"})).json()
    assert (qr["total"]["count"], qr["total"]["amount_yen"]) == (2, 1050)
    paypay_at_shiminka = (
        await reporting.http.get(
            "/kpi/cashless-share", params={"facility": "shiminka", "brand": "PayPay"}
        )
    ).json()
    assert paypay_at_shiminka["total"]["amount_yen"] == 300


async def test_revenue_is_gross_by_facility_and_day(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    body = (await reporting.http.get("/kpi/revenue", params={"facility": "shiminka"})).json()
    unsettled = {"fee_yen": 0, "reconciled": None}
    assert body == {
        "total_gross_yen": 1800,
        "total_fee_yen": 0,
        "total_net_yen": 1800,
        "days": [
            {"facility_code": "shiminka", "day": "2026-10-05", "count": 2, "gross_yen": 600}
            | unsettled
            | {"net_yen": 600},
            {"facility_code": "shiminka", "day": "2026-10-06", "count": 1, "gross_yen": 450}
            | unsettled
            | {"net_yen": 450},
            {"facility_code": "shiminka", "day": "2026-11-02", "count": 1, "gross_yen": 750}
            | unsettled
            | {"net_yen": 750},
        ],
    }


async def test_each_kpi_exports_as_csv(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    resp = await reporting.http.get("/kpi/online-usage.csv")
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert rows[0] == {
        "month": "2026-10",
        "procedure_code": "JUMINHYO",
        "online": "2",
        "counter": "1",
        "mail": "0",
        "total": "3",
        "online_share": "0.6667",
    }
    assert len(rows) == 3
    pays = list(
        csv.DictReader(io.StringIO((await reporting.http.get("/kpi/cashless-share.csv")).text))
    )
    assert sum(int(r["amount_yen"]) for r in pays) == 3800
    assert {r["cashless"] for r in pays if r["method"] == "cash"} == {"false"}
    revenue = list(csv.DictReader(io.StringIO((await reporting.http.get("/kpi/revenue.csv")).text)))
    assert len(revenue) == 5  # 2 bijutsukan days + 3 shiminka days


async def test_open_data_holds_only_aggregated_figures(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    body = (await reporting.http.get("/open-data/kpi")).json()
    assert body["local_government_code"] == "072036"
    assert {tuple(sorted(r)) for r in body["online_usage"]} == {
        ("month", "online", "online_share", "procedure_code", "total")
    }
    assert {r["month"] for r in body["cashless_share"]} == {"2026-10", "2026-11"}
    text = (await reporting.http.get("/open-data/kpi")).text
    for env_id_like in ("payment_id", "application_id", "receipt", "terminal", "applicant"):
        assert env_id_like not in text


async def test_bad_filters_are_refused_with_the_field_named(start_service: Any) -> None:
    reporting = await start_service("reporting")
    resp = await reporting.http.get("/kpi/online-usage", params={"from": "2026-13"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "from"]
    resp = await reporting.http.get("/kpi/cashless-share", params={"method": "cheque"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "method"]
    resp = await reporting.http.get("/kpi/revenue", params={"from": "2026-11", "to": "2026-10"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "to"]
