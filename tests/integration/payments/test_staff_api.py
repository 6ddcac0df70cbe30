"""The staff API: payments by facility, day and method; refunds; reconciliation status."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.payments import PaymentRefundedV1
from services.payments.handlers.registry import register_terminal
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import revenue_yen, terminal_publishes, transaction
from tests.integration.payments.test_terminal_ingestion import published

STAFF = {"authorization": "Bearer tok-counter-0000001"}


@pytest.fixture(autouse=True)
def staff_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_STAFF_TOKENS", "madoguchi02=tok-counter-0000001")


async def captured(payments: Any, js: JetStreamContext, namespace: str) -> list[dict[str, Any]]:
    """Three payments at two facilities on two days."""
    civic = (await register_terminal(payments.pool, "shiminka")).terminal_id
    museum = (await register_terminal(payments.pool, "bijutsukan")).terminal_id
    for tx in [
        transaction(civic, "C1", amount_yen=750, occurred_at="2026-11-24T09:00:00+09:00"),
        transaction(
            civic, "C2", method="cash", brand=None, occurred_at="2026-11-24T15:00:00+09:00"
        ),
        transaction(
            museum, "M1", facility_code="bijutsukan", occurred_at="2026-11-25T10:00:00+09:00"
        ),
    ]:
        await terminal_publishes(js, namespace, tx)

    async def three() -> list[dict[str, Any]]:
        found = await payments.http.get(
            "/payments", params={"from": "2026-11-01", "to": "2026-11-30"}, headers=STAFF
        )
        body: list[dict[str, Any]] = found.json()
        return body if len(body) == 3 else []

    return await wait_for(three)


async def test_payments_are_found_by_facility_day_and_method(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    await captured(payments, js, namespace)
    day = {"from": "2026-11-24", "to": "2026-11-24"}
    civic = await payments.http.get(
        "/payments", params=day | {"facility": "shiminka"}, headers=STAFF
    )
    assert [p["amount_yen"] for p in civic.json()] == [750, 300]
    cash = await payments.http.get("/payments", params=day | {"method": "cash"}, headers=STAFF)
    assert [(p["method"], p["brand"]) for p in cash.json()] == [("cash", None)]
    bad = await payments.http.get("/payments", params=day | {"method": "cheque"}, headers=STAFF)
    assert bad.status_code == 422
    assert "method" in bad.text
    assert (await payments.http.get("/payments", params=day)).status_code == 401


async def test_a_staff_refund_above_the_capture_is_refused_with_409(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    first = (await captured(payments, js, namespace))[0]
    url = f"/payments/{first['payment_id']}/refunds"

    partial = await payments.http.post(url, json={"amount_yen": 500}, headers=STAFF)
    assert partial.status_code == 201, partial.text
    assert partial.json()["refunded_total_yen"] == 500
    too_much = await payments.http.post(url, json={"amount_yen": 251}, headers=STAFF)
    assert too_much.status_code == 409
    assert too_much.json()["detail"]["error"] == "RefundExceedsCapture"
    assert "250 of 750 yen" in too_much.json()["detail"]["message"]

    state = await payments.http.get(f"/payments/{first['payment_id']}", headers=STAFF)
    assert state.json()["refunded_yen"] == 500
    assert await revenue_yen(payments.pool) == 750 + 300 - 500
    [event] = await wait_for(lambda: published(js, namespace, PaymentRefundedV1))
    assert (event["amount_yen"], event["channel"]) == (500, "terminal")
    staff = await payments.pool.fetchval("SELECT staff_id FROM refunds")
    assert staff == "madoguchi02"


async def test_a_retried_refund_with_the_same_id_refunds_once(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    first = (await captured(payments, js, namespace))[0]
    url = f"/payments/{first['payment_id']}/refunds"
    body = {"amount_yen": 300, "refund_id": str(uuid.uuid4())}
    assert (await payments.http.post(url, json=body, headers=STAFF)).status_code == 201
    again = await payments.http.post(url, json=body, headers=STAFF)
    assert again.status_code == 200
    assert again.json()["refunded_total_yen"] == 300
    assert await payments.pool.fetchval("SELECT count(*) FROM refunds") == 1


async def test_refund_input_errors_name_the_field_and_unknown_payments_are_404(
    payments: Any,
) -> None:
    url = f"/payments/{uuid.uuid4()}/refunds"
    negative = await payments.http.post(url, json={"amount_yen": -1}, headers=STAFF)
    assert negative.status_code == 422
    assert "amount_yen" in negative.text
    unknown = await payments.http.post(url, json={"amount_yen": 1}, headers=STAFF)
    assert unknown.status_code == 404
    assert (await payments.http.post(url, json={"amount_yen": 1})).status_code == 401


async def test_reconciliation_status_lists_the_batches_of_a_day(payments: Any) -> None:
    await payments.http.post(
        "/settlements",
        json={
            "batch_id": "B-9",
            "facility_code": "bijutsukan",
            "business_date": "2026-11-25",
            "processor": "指定納付受託者",
            "lines": [{"method": "qr", "brand": "PayPay", "count": 1, "amount_yen": 300}],
        },
        headers=STAFF,
    )
    status = await payments.http.get(
        "/settlements",
        params={"from": "2026-11-25", "to": "2026-11-25", "facility": "bijutsukan"},
        headers=STAFF,
    )
    [batch] = status.json()
    assert (batch["batch_id"], batch["status"]) == ("B-9", "mismatch")
    assert batch["differences"][0]["amount_difference_yen"] == 300
