"""Every KPI, exactly, from known traffic through the real services.

Applications, payments and reporting run on the session's real NATS JetStream and PostgreSQL.
Citizens and counter staff apply over HTTP (applications); terminals at three facilities
publish payments of every method over NATS across three months (payments turns them into
captures, refunds and voids); reporting's read-models and API must give exactly the figures
worked out by hand below. One full refund reaches the payments stream *before* the capture it
refunds.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from nats.js import JetStreamContext
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from contracts.applications import ProcedureGroup
from services.applications.domain import Procedure
from services.applications.handlers.catalog_import import import_procedures
from services.payments.handlers.registry import register_terminal
from services.reporting.domain import tokyo_month
from services.runtime.dlq import list_dead_letters
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.payments.helpers import terminal_publishes, transaction
from tests.integration.reporting.events import capture, refund
from tests.tokens import ENV, applicant

STAFF_TOKEN = "counter-staff-token-0001"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
FEE_FREE = {"procedure_code": "E2E_KOE", "form": {"subject": "公園のベンチ"}}
FORM = {
    "type": "object",
    "properties": {"subject": {"type": "string", "minLength": 1}},
    "required": ["subject"],
    "additionalProperties": False,
}
# The catalog as `cityhall catalog import` announces it: 2 of 4 online; the roadmap plans
# E2E_INKAN for 2026-Q3 (October-December 2026) and E2E_KAZEI for 2027-Q1.
CATALOG = [
    Procedure(
        "E2E_KOE",
        "市民の声",
        "政策開発部",
        ProcedureGroup(1),
        0,
        False,
        FORM,
        online_since=date(2026, 8, 1),
    ),
    Procedure(
        "E2E_JUMINHYO",
        "住民票の写しの交付",
        "市民部",
        ProcedureGroup(2),
        300,
        True,
        FORM,
        online_since=date(2026, 9, 10),
    ),
    Procedure(
        "E2E_INKAN",
        "印鑑登録証明書の交付",
        "市民部",
        ProcedureGroup(2),
        300,
        True,
        FORM,
        planned_online_quarter="2026-Q3",
    ),
    Procedure(
        "E2E_KAZEI",
        "所得課税証明書の交付",
        "税務部",
        ProcedureGroup(1),
        300,
        True,
        FORM,
        planned_online_quarter="2027-Q1",
    ),
]


def at(text: str) -> str:
    return f"{text}+09:00"


async def apply_over_http(applications: Any) -> None:
    """3 online, 2 counter, 1 mail; three approved, the mail one withdrawn."""
    report = await import_procedures(applications.pool, CATALOG)
    assert report.registered == 4
    http = applications.http
    ids = {}
    for name, channel in (
        ("o1", "online"),
        ("o2", "online"),
        ("o3", "online"),
        ("c1", "counter"),
        ("c2", "counter"),
        ("m1", "mail"),
    ):
        headers = applicant() if channel == "online" else STAFF
        resp = await http.post(
            "/applications", json=FEE_FREE | {"channel": channel}, headers=headers
        )
        assert resp.status_code == 201, resp.text
        ids[name] = resp.json()["id"]
    for name in ("o1", "o2", "c1"):
        assert (
            await http.post(f"/applications/{ids[name]}/review", headers=STAFF)
        ).status_code == 200
        resp = await http.post(f"/applications/{ids[name]}/approve", headers=STAFF)
        assert resp.status_code == 200, resp.text
    resp = await http.post(f"/applications/{ids['m1']}/withdraw", headers=STAFF)
    assert resp.status_code == 200, resp.text


async def pay_at_terminals(payments: Any, js: JetStreamContext, namespace: str) -> None:
    shiminka = (await register_terminal(payments.pool, "shiminka")).terminal_id
    museum = (await register_terminal(payments.pool, "bijutsukan")).terminal_id
    gym = (await register_terminal(payments.pool, "sogo-taiikukan")).terminal_id

    def tx(terminal: str, facility: str, tid: str, **kw: Any) -> dict[str, Any]:
        return transaction(terminal, tid, facility_code=facility, **kw)

    s, m, g = (
        lambda tid, **kw: tx(shiminka, "shiminka", tid, **kw),
        lambda tid, **kw: tx(museum, "bijutsukan", tid, item="観覧料", **kw),
        lambda tid, **kw: tx(gym, "sogo-taiikukan", tid, item="施設使用料", **kw),
    )
    for payload in (
        s("C1", method="qr", brand="PayPay", amount_yen=300, occurred_at=at("2026-08-03T09:00:00")),
        s("C2", method="cash", brand=None, amount_yen=300, occurred_at=at("2026-08-03T10:00:00")),
        s(
            "C3",
            method="emoney",
            brand="交通系IC",
            amount_yen=450,
            occurred_at=at("2026-09-01T09:00:00"),
        ),
        s(
            "C4",
            method="credit",
            brand="Visa",
            card={"token": "tok_visa_0001", "brand": "Visa", "last4": "4242"},
            amount_yen=750,
            occurred_at=at("2026-09-15T09:00:00"),
        ),
        s(
            "R1",
            kind="refund",
            method="credit",
            brand="Visa",
            amount_yen=250,
            original_transaction_id="C4",
            occurred_at=at("2026-09-16T09:00:00"),
        ),
        m(
            "C5",
            method="credit",
            brand="JCB",
            card={"token": "tok_jcb_0001", "brand": "JCB", "last4": "0005"},
            amount_yen=1000,
            occurred_at=at("2026-09-30T23:30:00"),
        ),
        m("C6", method="cash", brand=None, amount_yen=1000, occurred_at=at("2026-10-01T00:30:00")),
        g("C8", method="cash", brand=None, amount_yen=500, occurred_at=at("2026-10-05T10:00:00")),
        g(
            "V1",
            kind="void",
            method="cash",
            brand=None,
            amount_yen=500,
            original_transaction_id="C8",
            occurred_at=at("2026-10-05T10:01:00"),
        ),
        g(
            "C9",
            method="emoney",
            brand="WAON",
            amount_yen=500,
            occurred_at=at("2026-10-06T10:00:00"),
        ),
    ):
        await terminal_publishes(js, namespace, payload)


async def refund_before_capture(js: JetStreamContext, namespace: str) -> None:
    """The out-of-order pair: a full refund (返金) of a museum QR payment lands on the payments
    stream before its capture, as two replicas of payments racing could publish them.

    Published here as payments would, since payments itself refuses a terminal's refund
    whose capture it has not seen (it dead-letters it), so it never emits this order."""
    payment_id = uuid.uuid4()
    late = capture("bijutsukan", "qr", "d払い", 1000, "2026-10-02 10:00", payment_id)
    early = refund(payment_id, 1000, 1000, "2026-10-02 11:00", facility="bijutsukan", brand="d払い")
    await publish_envelope(js, namespace, early)
    await publish_envelope(js, namespace, late)


async def coverage_of(reporting: Any) -> Any:
    params = {"from": "2026-07", "to": "2027-06"}
    return (await reporting.http.get("/kpi/online-coverage", params=params)).json()


async def catalog_of(applications: Any) -> list[dict[str, Any]]:
    catalog: list[dict[str, Any]] = []
    while True:
        page = (
            await applications.http.get(
                "/procedures", params={"limit": 200, "offset": len(catalog)}
            )
        ).json()
        catalog += page["items"]
        if len(catalog) >= page["total"]:
            return catalog


@pytest.fixture
async def city(start_service: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any]:
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", f"counter01={STAFF_TOKEN}")
    monkeypatch.setenv(*ENV)
    monkeypatch.setenv("REPORTING_STAFF_TOKENS", f"ops01={STAFF_TOKEN}")
    applications = await start_service("applications")
    payments = await start_service("payments")
    reporting = await start_service("reporting")
    reporting.http.headers.update(STAFF)  # /metrics and /projection/lag are operators'
    return applications, payments, reporting


async def test_every_kpi_from_known_traffic_through_the_real_services(
    city: tuple[Any, Any, Any], js: JetStreamContext, namespace: str
) -> None:
    applications, payments, reporting = city

    # The first import announces the catalog's hand-written core (an empty import suffices).
    await import_procedures(applications.pool, [])

    async def built_in_catalog_projected() -> Any:
        coverage = await coverage_of(reporting)
        total = len(await catalog_of(applications))
        ready = coverage["total"]["procedures"] == total > 0
        return coverage if ready else None

    before = await wait_for(built_in_catalog_projected)
    await apply_over_http(applications)
    await pay_at_terminals(payments, js, namespace)
    await refund_before_capture(js, namespace)
    this_month = tokyo_month(datetime.now(UTC)).strftime("%Y-%m")
    get = reporting.http.get

    async def settled() -> bool:
        # Payments has taken all 10 terminal transactions and published what they caused;
        # then reporting has applied every event.
        taken = await payments.pool.fetchval("SELECT count(*) FROM terminal_transactions")
        unpublished = await payments.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        done = (await get("/kpi/certificate-turnaround")).json()["total"]
        lags = (await get("/projection/lag")).json()
        return (
            taken == 10
            and unpublished == 0
            and (done["completed"], done["closed_without_completion"]) == (3, 1)
            and all(lag["events_behind"] == 0 for lag in lags)
        )

    await wait_for(settled, timeout=30)
    assert await list_dead_letters(js, namespace) == []
    await asyncio.sleep(0.5)  # anything counted twice would show by now

    # -- online usage rate
    usage = (await get("/kpi/online-usage")).json()
    counts = {"online": 3, "counter": 2, "mail": 1, "total": 6, "online_share": 0.5}
    assert usage["total"] == counts
    assert usage["by_month"] == [{"month": this_month, **counts}]
    assert usage["by_procedure"] == [{"procedure_code": "E2E_KOE", **counts}]
    assert usage["by_department"] == [{"department": "政策開発部", **counts}]
    assert (await get("/kpi/applications/by-channel")).json() == counts

    # -- completion (no certificates in this traffic: no turnaround to measure)
    done = (await get("/kpi/certificate-turnaround")).json()["total"]
    assert done == {
        "submitted": 6,
        "completed": 3,
        "closed_without_completion": 1,
        "completion_rate": 0.5,
        "certificates_issued": 0,
        "median_seconds": None,
        "p90_seconds": None,
    }

    # -- online procedure coverage: the built-in catalog plus the 4 procedures imported
    after = await coverage_of(reporting)
    assert after["total"]["procedures"] == before["total"]["procedures"] + 4
    assert after["total"]["online"] == before["total"]["online"] + 2
    catalog = await catalog_of(applications)
    assert (after["total"]["online"], after["total"]["procedures"]) == (
        sum(1 for p in catalog if p["online_since"] is not None),
        len(catalog),
    )
    by_group = {g["group"]: (g["online"], g["procedures"]) for g in after["by_group"]}
    assert by_group == {
        group: (
            sum(1 for p in catalog if p["group"] == group and p["online_since"] is not None),
            sum(1 for p in catalog if p["group"] == group),
        )
        for group in (1, 2)
    }
    depts = {d["department"]: (d["online"], d["procedures"]) for d in after["by_department"]}
    assert depts == {
        dept: (
            sum(1 for p in catalog if p["department"] == dept and p["online_since"] is not None),
            sum(1 for p in catalog if p["department"] == dept),
        )
        for dept in {p["department"] for p in catalog}
    }
    added = {
        m["month"]: (m["online"] - b["online"], m["planned"] - b["planned"])
        for m, b in zip(after["by_month"], before["by_month"], strict=True)
    }
    assert added == {  # what the imported roadmap adds, month by month: (actual, planned)
        "2026-07": (0, 0),
        "2026-08": (1, 1),
        "2026-09": (2, 2),
        "2026-10": (2, 2),
        "2026-11": (2, 2),
        "2026-12": (2, 3),
        "2027-01": (2, 3),
        "2027-02": (2, 3),
        "2027-03": (2, 3),
        "2027-04": (2, 3),
        "2027-05": (2, 3),
        "2027-06": (2, 4),
    }

    # -- cashless share: the museum's QR payment (refunded in full) and C8 (voided) no longer
    # count; C4 stands at 500 after its partial refund
    pay = (await get("/kpi/cashless-share")).json()
    assert pay["total"] == {
        "count": 7,
        "amount_yen": 4050,
        "cashless_count": 5,
        "cashless_amount_yen": 2750,
        "cashless_share_by_count": 0.7143,
        "cashless_share_by_amount": 0.679,
    }
    months = {m["month"]: m for m in pay["by_month"]}
    assert {k: (v["count"], v["amount_yen"]) for k, v in months.items()} == {
        "2026-08": (2, 600),
        "2026-09": (3, 1950),
        "2026-10": (2, 1500),
    }
    assert months["2026-08"]["cashless_share_by_count"] == 0.5
    assert months["2026-09"]["cashless_share_by_amount"] == 1.0
    assert months["2026-10"]["cashless_share_by_amount"] == 0.3333
    facilities = {
        f["facility_code"]: (
            f["count"],
            f["amount_yen"],
            f["cashless_share_by_count"],
            f["cashless_share_by_amount"],
        )
        for f in pay["by_facility"]
    }
    assert facilities == {
        "shiminka": (4, 1550, 0.75, 0.8065),
        "bijutsukan": (2, 2000, 0.5, 0.5),
        "sogo-taiikukan": (1, 500, 1.0, 1.0),
    }
    methods = {(m["method"], m["brand"]): (m["count"], m["amount_yen"]) for m in pay["by_method"]}
    assert methods == {
        ("cash", None): (2, 1300),
        ("credit", "JCB"): (1, 1000),
        ("credit", "Visa"): (1, 500),
        ("emoney", "WAON"): (1, 500),
        ("emoney", "交通系IC"): (1, 450),
        ("qr", "PayPay"): (1, 300),
        ("qr", "d払い"): (0, 0),  # its only payment was refunded in full
    }
    assert all(d["count"] >= 0 and d["amount_yen"] >= 0 for d in pay["by_day"])

    # -- revenue by facility and day (gross)
    revenue = (await get("/kpi/revenue")).json()
    days = {(d["facility_code"], d["day"]): (d["count"], d["gross_yen"]) for d in revenue["days"]}
    assert days == {
        ("shiminka", "2026-08-03"): (2, 600),
        ("shiminka", "2026-09-01"): (1, 450),
        ("shiminka", "2026-09-15"): (1, 500),
        ("bijutsukan", "2026-09-30"): (1, 1000),
        ("bijutsukan", "2026-10-01"): (1, 1000),
        ("bijutsukan", "2026-10-02"): (0, 0),
        ("sogo-taiikukan", "2026-10-05"): (0, 0),
        ("sogo-taiikukan", "2026-10-06"): (1, 500),
    }
    assert revenue["total_gross_yen"] == 4050

    # -- open data and metrics carry the same figures
    open_data = (await get("/open-data/kpi")).json()
    assert sum(r["total"] for r in open_data["online_usage"]) == 6
    assert sum(r["amount_yen"] for r in open_data["cashless_share"]) == 4050
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families((await get("/metrics")).text)
        for s in family.samples
    }
    assert samples[("cityhall_cashless_share_by_count_ratio", ())] == 5 / 7
    assert samples[("cityhall_online_usage_ratio", ())] == 0.5
    assert (
        samples[("cityhall_projection_events_behind", (("consumer", "reporting_payments"),))] == 0
    )
