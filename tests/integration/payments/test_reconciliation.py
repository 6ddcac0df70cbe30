"""Daily reconciliation (調定) with processor fees (繰替払い), revenue per day, CSV export."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.payments import SettlementMismatchV1, SettlementReconciledV1
from services.payments.handlers.registry import register_terminal
from services.runtime.dlq import list_dead_letters
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import terminal_publishes, terminal_settles, transaction
from tests.integration.payments.test_terminal_ingestion import published

STAFF = {"authorization": "Bearer tok-finance-0000001"}
DAY = "2026-11-24"


@pytest.fixture(autouse=True)
def staff_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PAYMENTS_STAFF_TOKENS", "kaikei01=tok-finance-0000001,madoguchi02=tok-counter-0000001"
    )


async def a_day_at_the_civic_affairs_counter(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    """PayPay: 300, 450 (150 refunded), 300 voided; 交通系IC: 200. All on 24 November."""
    t = (await register_terminal(payments.pool, "shiminka")).terminal_id
    at = f"{DAY}T10:00:00+09:00"
    for tx in [
        transaction(t, "C1", amount_yen=300, occurred_at=at),
        transaction(t, "C2", amount_yen=450, occurred_at=at),
        transaction(
            t, "R2", kind="refund", amount_yen=150, original_transaction_id="C2", occurred_at=at
        ),
        transaction(t, "C3", method="emoney", brand="交通系IC", amount_yen=200, occurred_at=at),
        transaction(t, "C4", amount_yen=300, occurred_at=at),
        transaction(
            t, "V4", kind="void", amount_yen=300, original_transaction_id="C4", occurred_at=at
        ),
        # 23:30 UTC on the 23rd is 08:30 on the 24th in Tokyo: the same business day.
        transaction(t, "C5", amount_yen=100, occurred_at="2026-11-23T23:30:00+00:00"),
    ]:
        await terminal_publishes(js, namespace, tx)

    async def all_posted() -> bool:
        return bool(await payments.pool.fetchval("SELECT count(*) FROM terminal_transactions") == 7)

    await wait_for(all_posted)


def batch(batch_id: str, lines: list[dict[str, Any]], facility: str = "shiminka") -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "facility_code": facility,
        "business_date": DAY,
        "processor": "指定納付受託者",
        "lines": lines,
    }


async def test_a_matching_settlement_reconciles_the_day_with_gross_fee_and_net(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    await a_day_at_the_civic_affairs_counter(payments, js, namespace)
    body = batch(
        "B-1",
        [
            {"method": "qr", "brand": "PayPay", "count": 3, "amount_yen": 700, "fee_yen": 21},
            {"method": "emoney", "brand": "交通系IC", "count": 1, "amount_yen": 200, "fee_yen": 6},
        ],
    )
    response = await payments.http.post("/settlements", json=body, headers=STAFF)

    assert response.status_code == 201, response.text
    assert response.json() == {
        "batch_id": "B-1",
        "status": "reconciled",
        "reported_yen": 900,
        "fee_yen": 27,
        "net_yen": 873,
        "differences": [],
    }
    [event] = await wait_for(lambda: published(js, namespace, SettlementReconciledV1))
    assert (event["gross_yen"], event["fee_yen"], event["net_yen"]) == (900, 27, 873)
    revenue = await payments.http.get("/revenue", params={"from": DAY, "to": DAY}, headers=STAFF)
    assert revenue.json() == [
        {
            "facility_code": "shiminka",
            "business_date": DAY,
            "gross_yen": 900,
            "fee_yen": 27,
            "net_yen": 873,
            "reconciliation": "reconciled",
        }
    ]
    owed = await payments.pool.fetchval(
        "SELECT sum(debit_yen - credit_yen) FROM ledger_entries WHERE account LIKE 'receivable:%'"
    )
    assert owed == 0  # the processor's fee and remittance cleared what it owed

    again = await payments.http.post("/settlements", json=body, headers=STAFF)
    assert again.status_code == 200
    assert again.json()["status"] == "reconciled"
    assert (
        await payments.pool.fetchval("SELECT count(*) FROM postings WHERE kind = 'settlement'") == 1
    )


async def test_a_planted_settlement_mismatch_is_reported_with_the_right_difference(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    await a_day_at_the_civic_affairs_counter(payments, js, namespace)
    planted = batch(
        "B-2",
        [
            # One PayPay payment of 300 yen the ledger never saw:
            {"method": "qr", "brand": "PayPay", "count": 4, "amount_yen": 1000, "fee_yen": 30},
            {"method": "emoney", "brand": "交通系IC", "count": 1, "amount_yen": 200, "fee_yen": 6},
        ],
    )
    response = await payments.http.post("/settlements", json=planted, headers=STAFF)

    assert response.status_code == 201
    assert response.json()["status"] == "mismatch"
    expected = {
        "method": "qr",
        "brand": "PayPay",
        "ledger_count": 3,
        "reported_count": 4,
        "ledger_amount_yen": 700,
        "reported_amount_yen": 1000,
        "count_difference": 1,
        "amount_difference_yen": 300,
    }
    assert response.json()["differences"] == [expected]
    [event] = await wait_for(lambda: published(js, namespace, SettlementMismatchV1))
    assert event["differences"] == [expected]
    [day] = (
        await payments.http.get("/revenue", params={"from": DAY, "to": DAY}, headers=STAFF)
    ).json()
    assert (day["gross_yen"], day["reconciliation"]) == (900, "mismatch")


async def test_revenue_is_exported_as_csv_for_the_finance_office(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    await a_day_at_the_civic_affairs_counter(payments, js, namespace)
    response = await payments.http.get(
        "/revenue.csv", params={"from": "2026-11-01", "to": "2026-11-30"}, headers=STAFF
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows == [
        ["facility_code", "business_date", "gross_yen", "fee_yen", "net_yen", "reconciliation"],
        ["shiminka", DAY, "900", "0", "900", "unreconciled"],
    ]


async def test_settlements_need_a_staff_credential_and_valid_lines(payments: Any) -> None:
    body = batch("B-3", [{"method": "cash", "count": 1, "amount_yen": 300, "fee_yen": 10}])
    anonymous = await payments.http.post("/settlements", json=body)
    assert anonymous.status_code == 401
    wrong = await payments.http.post(
        "/settlements", json=body, headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    invalid = await payments.http.post("/settlements", json=body, headers=STAFF)
    assert invalid.status_code == 422
    assert "cash has no processor fee" in invalid.text
    no_lines = await payments.http.post("/settlements", json=batch("B-4", []), headers=STAFF)
    assert no_lines.status_code == 422
    assert "lines" in no_lines.text


async def test_a_terminal_settles_its_own_facility_s_day_over_nats(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    await a_day_at_the_civic_affairs_counter(payments, js, namespace)
    [terminal] = await payments.pool.fetch("SELECT terminal_id FROM terminals")
    t = terminal["terminal_id"]
    planted = batch(
        "T-1", [{"method": "emoney", "brand": "交通系IC", "count": 1, "amount_yen": 250}]
    )
    await terminal_settles(js, namespace, t, planted)
    [event] = await wait_for(lambda: published(js, namespace, SettlementMismatchV1))
    assert event["differences"][0]["amount_difference_yen"] == 50

    # For another facility, or a transaction sent on the settlement subject: refused.
    await terminal_settles(js, namespace, t, batch("T-2", planted["lines"], "bijutsukan"))
    await terminal_publishes(
        js,
        namespace,
        transaction(t, "C9"),
        subject=f"terminals.shiminka.{t}.settlement.v1",
    )

    async def two_dead() -> list[Any]:
        letters = await list_dead_letters(js, namespace)
        return letters if len(letters) == 2 else []

    reasons = sorted(d.reason for d in await wait_for(two_dead))
    assert "TerminalNotAtFacility" in reasons[0]
    assert "is not terminal" in reasons[1]
    assert await payments.pool.fetchval("SELECT count(*) FROM settlements") == 1
