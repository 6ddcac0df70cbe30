"""Refunds and voids (also before their capture), certificate turnaround and completion, and
online procedure coverage, on real JetStream and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from nats.js import JetStreamContext

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureOnlinedV1,
    ProcedureRegisteredV1,
    ProcedureUpdatedV1,
)
from services.runtime.dlq import list_dead_letters
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.reporting.events import (
    capture,
    procedure,
    refund,
    settlement_mismatch,
    settlement_reconciled,
    step,
    submitted_with_id,
    void,
)


async def reversals_applied(reporting: Any, expected: int) -> None:
    async def applied() -> bool:
        n = await reporting.pool.fetchval("SELECT count(*) FROM payment_reversals WHERE applied")
        return bool(n == expected)

    await wait_for(applied)


async def test_a_refund_before_its_capture_is_applied_when_the_capture_arrives(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    early = uuid.uuid4()
    # The refund is published first: reporting has no capture to take it from yet.
    await publish_envelope(js, namespace, refund(early, 100, 100, "2026-10-05 12:00"))

    async def waiting() -> bool:
        return bool(await reporting.pool.fetchval("SELECT count(*) FROM payment_reversals") == 1)

    await wait_for(waiting)
    body = (await reporting.http.get("/kpi/cashless-share")).json()
    assert (body["total"]["count"], body["total"]["amount_yen"]) == (0, 0)  # nothing negative

    await publish_envelope(
        js, namespace, capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00", early)
    )
    await reversals_applied(reporting, 1)
    body = (await reporting.http.get("/kpi/cashless-share")).json()
    assert body["total"]["count"] == 1
    assert body["total"]["amount_yen"] == 200
    assert await reporting.pool.fetchval("SELECT min(count) FROM payments_daily") >= 0


async def test_refunds_and_voids_reduce_what_they_reverse(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    partly, fully, voided, kept = (uuid.uuid4() for _ in range(4))
    for env in (
        capture("shiminka", "qr", "PayPay", 450, "2026-10-05 09:00", partly),
        capture("shiminka", "credit", "JCB", 750, "2026-10-05 10:00", fully),
        capture("shiminka", "cash", None, 300, "2026-10-06 10:00", voided),
        capture("shiminka", "cash", None, 300, "2026-10-06 11:00", kept),
        refund(partly, 150, 150, "2026-10-07 09:00"),
        refund(fully, 500, 500, "2026-10-07 09:00", method="credit", brand="JCB"),
        refund(fully, 250, 750, "2026-10-08 09:00", method="credit", brand="JCB"),
        void(voided, 300, "2026-10-06 10:05"),
    ):
        await publish_envelope(js, namespace, env)
    await reversals_applied(reporting, 4)

    body = (await reporting.http.get("/kpi/cashless-share")).json()
    assert body["total"] == {
        "count": 2,  # the fully refunded and the voided payment count no more
        "amount_yen": 600,  # 300 of 450 and the kept 300 in cash
        "cashless_count": 1,
        "cashless_amount_yen": 300,
        "cashless_share_by_count": 0.5,
        "cashless_share_by_amount": 0.5,
    }
    revenue = (await reporting.http.get("/kpi/revenue")).json()
    assert [(d["day"], d["count"], d["gross_yen"]) for d in revenue["days"]] == [
        ("2026-10-05", 1, 300),  # refunds count against the capture's day
        ("2026-10-06", 1, 300),
    ]


async def test_a_refund_above_the_capture_is_dead_lettered_with_the_reason(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting", consumer_max_deliver=1)
    pid = uuid.uuid4()
    await publish_envelope(
        js, namespace, capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00", pid)
    )
    too_much = refund(pid, 400, 400, "2026-10-05 10:00")
    await publish_envelope(js, namespace, too_much)

    async def dead() -> list[Any]:
        return await list_dead_letters(js, namespace, consumer="reporting_payments")

    [letter] = await wait_for(dead)
    assert letter.headers["ce-id"] == too_much.id
    assert "ReversalExceedsCapture" in letter.reason
    assert "refund of 400 yen exceeds the 300 yen" in letter.reason
    body = (await reporting.http.get("/kpi/cashless-share")).json()
    assert body["total"]["amount_yen"] == 300


async def test_certificate_turnaround_and_completion_rate(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    ids = [uuid.uuid4() for _ in range(7)]
    hours = [1, 2, 3, 10]
    envs = []
    for app_id, h in zip(ids[:4], hours, strict=True):
        envs.append(submitted_with_id(app_id, "online", "JUMINHYO", "2026-10-01 09:00"))
        envs.append(
            step(
                CertificateIssuedV1,
                app_id,
                "JUMINHYO",
                f"2026-10-01 {9 + h:02d}:00",
                certificate_number=f"072036-2026-{h:07d}",
            )
        )
    # Out of order: the certificate of ids[3] is announced before its submission.
    envs[6], envs[7] = envs[7], envs[6]
    envs.append(submitted_with_id(ids[4], "counter", "KOSEKI", "2026-11-02 09:00"))
    envs.append(step(ApplicationApprovedV1, ids[4], "KOSEKI", "2026-11-02 10:00"))
    envs.append(submitted_with_id(ids[5], "mail", "KOSEKI", "2026-11-03 09:00"))
    envs.append(step(ApplicationRejectedV1, ids[5], "KOSEKI", "2026-11-04 09:00", reason="不備"))
    envs.append(submitted_with_id(ids[6], "online", "KOSEKI", "2026-11-05 09:00"))
    envs.append(step(ApplicationWithdrawnV1, ids[6], "KOSEKI", "2026-11-05 10:00"))
    for env in envs:
        await publish_envelope(js, namespace, env)

    async def all_in() -> Any:
        body = (await reporting.http.get("/kpi/certificate-turnaround")).json()
        done = body["total"]["submitted"] == 7 and body["total"]["certificates_issued"] == 4
        return body if done and body["total"]["closed_without_completion"] == 2 else None

    body = await wait_for(all_in)
    assert body["total"] == {
        "submitted": 7,
        "completed": 5,
        "closed_without_completion": 2,
        "completion_rate": 0.7143,
        "certificates_issued": 4,
        "median_seconds": 9000.0,  # (2 h + 3 h) / 2
        "p90_seconds": 28440.0,  # 3 h + 0.7 * (10 h - 3 h), interpolated
    }
    months = {m["month"]: m for m in body["by_month"]}
    assert months["2026-10"]["completion_rate"] == 1.0
    assert months["2026-11"]["completed"] == 1
    assert months["2026-11"]["median_seconds"] is None
    koseki = (
        await reporting.http.get("/kpi/certificate-turnaround", params={"procedure": "KOSEKI"})
    ).json()
    assert koseki["total"]["completion_rate"] == 0.3333
    # One procedure's months (its own rows and bins, read without adding up): all of
    # JUMINHYO's certificates were in October.
    juminhyo = (
        await reporting.http.get("/kpi/certificate-turnaround", params={"procedure": "JUMINHYO"})
    ).json()
    [october] = juminhyo["by_month"]
    assert (october["month"], october["submitted"], october["certificates_issued"]) == (
        "2026-10",
        4,
        4,
    )
    assert (october["median_seconds"], october["p90_seconds"]) == (9000.0, 28440.0)
    # A procedure with no applications: one total of zeros, no months (not a 500).
    none = await reporting.http.get("/kpi/certificate-turnaround", params={"procedure": "NOSUCH"})
    assert none.status_code == 200, none.text
    assert (none.json()["total"]["submitted"], none.json()["by_month"]) == (0, [])


async def test_online_coverage_by_group_and_department_planned_beside_actual(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    for env in (
        procedure(
            ProcedureRegisteredV1, "JUMINHYO", "市民部", 2, "2021-04-01", None, "2026-09-01 09:00"
        ),
        procedure(ProcedureRegisteredV1, "INKAN", "市民部", 1, None, "2026-Q3", "2026-09-01 09:00"),
        procedure(
            ProcedureRegisteredV1, "NOZEI", "税務部", 1, "2026-10-15", None, "2026-10-15 09:00"
        ),
        procedure(ProcedureRegisteredV1, "KAZEI", "税務部", 2, None, "2027-Q1", "2026-09-01 09:00"),
        procedure(
            ProcedureOnlinedV1, "INKAN", "市民部", 1, "2026-11-20", "2026-Q3", "2026-11-20 09:00"
        ),
        # An older update arriving late must not take NOZEI offline again.
        procedure(ProcedureUpdatedV1, "NOZEI", "税務部", 1, None, None, "2026-10-01 09:00"),
    ):
        await publish_envelope(js, namespace, env)
    for code, channel in (("INKAN", "online"), ("INKAN", "counter"), ("NOZEI", "online")):
        await publish_envelope(
            js, namespace, submitted_with_id(uuid.uuid4(), channel, code, "2026-11-25 10:00")
        )

    async def all_in() -> Any:
        body = (
            await reporting.http.get(
                "/kpi/online-coverage", params={"from": "2026-09", "to": "2026-12"}
            )
        ).json()
        usage = (await reporting.http.get("/kpi/online-usage")).json()
        done = body["total"]["online"] == 3 and usage["total"]["total"] == 3
        return body if done else None

    body = await wait_for(all_in)
    assert body["total"] == {"online": 3, "procedures": 4, "coverage_share": 0.75}
    assert body["by_group"] == [
        {"group": 1, "online": 2, "procedures": 2, "coverage_share": 1.0},
        {"group": 2, "online": 1, "procedures": 2, "coverage_share": 0.5},
    ]
    assert body["by_department"] == [
        {"department": "市民部", "online": 2, "procedures": 2, "coverage_share": 1.0},
        {"department": "税務部", "online": 1, "procedures": 2, "coverage_share": 0.5},
    ]
    assert [(m["month"], m["online"], m["planned"]) for m in body["by_month"]] == [
        ("2026-09", 1, 1),
        ("2026-10", 2, 2),
        ("2026-11", 3, 2),
        ("2026-12", 3, 3),  # INKAN's plan was 2026-Q3 (October-December 2026)
    ]
    assert body["by_month"][2]["coverage_share"] == 0.75
    assert body["by_month"][2]["planned_share"] == 0.5

    by_dept = (await reporting.http.get("/kpi/online-usage")).json()["by_department"]
    assert [(d["department"], d["online"], d["total"]) for d in by_dept] == [
        ("市民部", 1, 2),
        ("税務部", 1, 1),
    ]
    group_1 = (await reporting.http.get("/kpi/online-usage", params={"group": 1})).json()
    assert group_1["total"]["total"] == 3
    tax = (await reporting.http.get("/kpi/online-coverage", params={"department": "税務部"})).json()
    assert tax["total"] == {"online": 1, "procedures": 2, "coverage_share": 0.5}
    resp = await reporting.http.get("/kpi/online-coverage", params={"group": 3})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "group"]


async def test_revenue_shows_the_processor_fee_net_and_whether_the_day_reconciled(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    for env in (
        capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00"),
        capture("shiminka", "credit", "Visa", 450, "2026-10-05 10:00"),
        capture("shiminka", "cash", None, 300, "2026-10-06 10:00"),
        capture("shiminka", "qr", "PayPay", 750, "2026-10-07 10:00"),
        settlement_reconciled("B-1005-qr", "2026-10-05", gross=300, fee=9),
        settlement_reconciled("B-1005-card", "2026-10-05", gross=450, fee=14),
        settlement_mismatch("B-1007", "2026-10-07"),
    ):
        await publish_envelope(js, namespace, env)

    async def settled() -> Any:
        body = (await reporting.http.get("/kpi/revenue")).json()
        days = {d["day"]: d for d in body["days"]}
        ready = len(days) == 3 and days["2026-10-07"]["reconciled"] is False
        return body if ready and days["2026-10-05"]["fee_yen"] == 23 else None

    body = await wait_for(settled)
    days = {
        d["day"]: (d["gross_yen"], d["fee_yen"], d["net_yen"], d["reconciled"])
        for d in body["days"]
    }
    assert days == {
        "2026-10-05": (750, 23, 727, True),  # revenue stays gross; the fee is shown apart
        "2026-10-06": (300, 0, 300, None),  # cash, no settlement batch yet
        "2026-10-07": (750, 0, 750, False),
    }
    assert (body["total_gross_yen"], body["total_fee_yen"], body["total_net_yen"]) == (
        1800,
        23,
        1777,
    )
    by_method = (await reporting.http.get("/kpi/revenue", params={"method": "qr"})).json()
    assert by_method["days"][0]["fee_yen"] is None  # a batch's fee is not split by method
    csv_text = (await reporting.http.get("/kpi/revenue.csv")).text
    assert "shiminka,2026-10-05,2,750,23,727,true" in csv_text
