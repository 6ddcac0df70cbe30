"""Money the provider took is always recorded: late, twice, another amount, the same notice
again. Each is captured (receipt, ledger, PaymentCaptured), flagged and put on the staff queue,
where staff refund it or attach it to its application; reporting counts the money once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.payments import (
    PaymentAttachedV1,
    PaymentCapturedV1,
    PaymentNeedsAttentionV1,
    PaymentRefundedV1,
)
from services.payments import webhook
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.payments.helpers import revenue_yen
from tests.integration.payments.test_online_payment import (
    SECRET,
    STAFF,
    fee_requested,
    provider_env,
    request_of,
    simulator,
)
from tests.integration.payments.test_terminal_ingestion import published

__all__ = ["provider_env"]  # a fixture, used by name


@pytest.fixture
def short_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_REQUEST_TTL_S", "0.5")
    monkeypatch.setenv("PAYMENT_EXPIRY_SWEEP_S", "0.1")


@pytest.fixture
async def reporting(payments: Any, start_service: Any) -> Any:
    """Reporting on the same namespace: its KPIs must count the money once."""
    return await start_service("reporting")


async def requested(
    payments: Any, js: JetStreamContext, namespace: str, yen: int
) -> dict[str, Any]:
    fee = fee_requested(yen)
    await publish_envelope(js, namespace, fee)
    return await request_of(payments, fee.data.application_id)


async def pay(payments: Any, reference: str, yen: int) -> dict[str, Any]:
    """Pay at the provider simulator, which sends its signed webhook; the answer it got."""
    async with simulator(payments) as provider:
        sent = (
            await provider.post("/pay", json={"reference": reference, "amount_yen": yen})
        ).json()
    assert sent["status_code"] == 200, sent
    answer: dict[str, Any] = sent["response"]
    return answer


async def has_status(payments: Any, request: dict[str, Any], status: str) -> bool:
    now = await request_of(payments, uuid.UUID(request["application_id"]))
    return bool(now["status"] == status)


async def queue(payments: Any, status: str = "open") -> list[dict[str, Any]]:
    response = await payments.http.get(
        "/payments/attention", params={"status": status}, headers=STAFF
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def act(payments: Any, payment_id: str, action: str, key: str, **body: Any) -> Any:
    return await payments.http.post(
        f"/payments/{payment_id}/attention/{action}",
        json=body or None,
        headers=STAFF | {"Idempotency-Key": key},
    )


async def counted_once(payments: Any, reporting: Any) -> None:
    """Reporting's revenue and cashless share agree with payments' ledger: each yen once."""
    ledger = await revenue_yen(payments.pool)
    kept = await payments.pool.fetchval(
        "SELECT count(*) FROM payments WHERE refunded_yen < amount_yen AND NOT voided"
    )

    async def agrees() -> bool:
        revenue = (await reporting.http.get("/kpi/revenue", params={"facility": "shiminka"})).json()
        share = (
            await reporting.http.get("/kpi/cashless-share", params={"facility": "shiminka"})
        ).json()
        return bool(
            revenue["total_gross_yen"] == ledger
            and (share["total"]["count"], share["total"]["amount_yen"]) == (kept, ledger)
        )

    await wait_for(agrees)


async def test_confirmation_after_expiry_is_captured_queued_and_attached_by_staff(
    provider_env: None,
    short_expiry: None,
    payments: Any,
    reporting: Any,
    js: JetStreamContext,
    namespace: str,
) -> None:
    request = await requested(payments, js, namespace, 300)

    await wait_for(lambda: has_status(payments, request, "expired"))
    answer = await pay(payments, request["reference"], 300)

    assert (answer["outcome"], answer["reasons"]) == ("needs_attention", ["paid_after_expiry"])
    captured = await wait_for(lambda: published(js, namespace, PaymentCapturedV1))
    assert [(c["amount_yen"], c["application_id"]) for c in captured] == [(300, None)]
    flagged = await wait_for(lambda: published(js, namespace, PaymentNeedsAttentionV1))
    assert flagged[0]["application_id"] == request["application_id"]
    assert flagged[0]["receipt_number"] == captured[0]["receipt_number"]
    [item] = await queue(payments)
    assert (item["payment_id"], item["reasons"], item["status"]) == (
        answer["payment_id"],
        ["paid_after_expiry"],
        "open",
    )
    assert await revenue_yen(payments.pool) == 300  # the city's money until it is returned

    attached = await act(payments, item["payment_id"], "attach", "attach-1")
    assert attached.status_code == 201, attached.text
    assert (attached.json()["resolution"], attached.json()["decided_by"]) == (
        "attached",
        "kaikei01",
    )
    again = await act(payments, item["payment_id"], "attach", "attach-1")
    assert again.status_code == 200
    assert again.json() == attached.json()
    assert await queue(payments) == []
    [decided] = await queue(payments, "decided")
    assert [a["action"] for a in decided["actions"]] == ["attach"]
    paid = await request_of(payments, uuid.UUID(request["application_id"]))
    assert (paid["status"], paid["payment_id"]) == ("paid", item["payment_id"])
    announced = await wait_for(lambda: published(js, namespace, PaymentAttachedV1))
    assert [(a["application_id"], a["amount_yen"]) for a in announced] == [
        (request["application_id"], 300)
    ]
    await counted_once(payments, reporting)


async def test_a_request_paid_twice_keeps_both_and_staff_refund_the_second(
    provider_env: None, payments: Any, reporting: Any, js: JetStreamContext, namespace: str
) -> None:
    request = await requested(payments, js, namespace, 300)
    first = await pay(payments, request["reference"], 300)
    second = await pay(payments, request["reference"], 300)  # another notice id

    assert (first["outcome"], second["outcome"]) == ("captured", "needs_attention")
    assert second["reasons"] == ["paid_twice"]
    assert await revenue_yen(payments.pool) == 600
    refused = await act(payments, second["payment_id"], "attach", "k1")
    assert refused.status_code == 409
    assert refused.json()["detail"]["error"] == "AttachNotAllowed"

    refunded = await act(payments, second["payment_id"], "refund", "k2", amount_yen=300)
    assert refunded.status_code == 201, refunded.text
    assert (refunded.json()["status"], refunded.json()["resolution"]) == ("decided", "refunded")
    assert refunded.json()["refunded_yen"] == 300
    assert (
        await act(payments, second["payment_id"], "refund", "k2", amount_yen=300)
    ).status_code == 200
    late = await act(payments, second["payment_id"], "refund", "k3", amount_yen=1)
    assert late.json()["detail"]["error"] == "AttentionAlreadyDecided"
    assert await revenue_yen(payments.pool) == 300
    refunds = await wait_for(lambda: published(js, namespace, PaymentRefundedV1))
    assert [(r["payment_id"], r["amount_yen"]) for r in refunds] == [(second["payment_id"], 300)]
    assert (await request_of(payments, uuid.UUID(request["application_id"])))["payment_id"] == (
        first["payment_id"]
    )
    await counted_once(payments, reporting)


async def test_another_amount_is_queued_and_attached_once_the_excess_is_refunded(
    provider_env: None, payments: Any, reporting: Any, js: JetStreamContext, namespace: str
) -> None:
    request = await requested(payments, js, namespace, 300)
    answer = await pay(payments, request["reference"], 450)
    assert (answer["outcome"], answer["reasons"]) == ("needs_attention", ["other_amount"])
    pid = answer["payment_id"]
    assert (await request_of(payments, uuid.UUID(request["application_id"])))["status"] == "pending"

    too_much = await act(payments, pid, "attach", "a1")
    assert too_much.status_code == 409
    assert "refund the 150 yen over it first" in too_much.json()["detail"]["message"]
    partly = await act(payments, pid, "refund", "r1", amount_yen=150)
    assert (partly.status_code, partly.json()["status"]) == (201, "open")
    reused = await act(payments, pid, "refund", "r1", amount_yen=100)
    assert (reused.status_code, reused.json()["detail"]["error"]) == (422, "IdempotencyKeyReused")
    attached = await act(payments, pid, "attach", "a2")
    assert (attached.status_code, attached.json()["resolution"]) == (201, "attached")
    assert [(a["action"], a["amount_yen"], a["staff_id"]) for a in attached.json()["actions"]] == [
        ("refund", 150, "kaikei01"),
        ("attach", None, "kaikei01"),
    ]
    assert (await request_of(payments, uuid.UUID(request["application_id"])))["status"] == "paid"
    assert await revenue_yen(payments.pool) == 300
    announced = await wait_for(lambda: published(js, namespace, PaymentAttachedV1))
    assert announced[0]["amount_yen"] == 300
    await counted_once(payments, reporting)


async def test_the_same_notice_three_times_is_answered_alike_and_recorded_once(
    provider_env: None,
    short_expiry: None,
    payments: Any,
    reporting: Any,
    js: JetStreamContext,
    namespace: str,
) -> None:
    request = await requested(payments, js, namespace, 300)

    await wait_for(lambda: has_status(payments, request, "expired"))
    async with simulator(payments) as provider:
        sent = (
            await provider.post(
                "/pay",
                json={"reference": request["reference"], "amount_yen": 300, "deliver": False},
            )
        ).json()
    # The provider's retries after a lost 2xx, two of them arriving together.
    answers = [
        await payments.http.post(
            "/webhooks/provider", content=sent["body"], headers=sent["headers"]
        )
    ]
    answers += await asyncio.gather(
        *(
            payments.http.post("/webhooks/provider", content=sent["body"], headers=sent["headers"])
            for _ in range(2)
        )
    )

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json()["outcome"] == "needs_attention"
    assert answers[1].json() == answers[0].json() == answers[2].json()
    assert await payments.pool.fetchval("SELECT count(*) FROM payments") == 1
    assert len(await queue(payments)) == 1
    assert await revenue_yen(payments.pool) == 300
    await counted_once(payments, reporting)
    assert len(await published(js, namespace, PaymentCapturedV1)) == 1
    assert len(await published(js, namespace, PaymentNeedsAttentionV1)) == 1


async def test_a_notice_id_reused_for_another_amount_is_refused(
    provider_env: None, payments: Any, js: JetStreamContext, namespace: str
) -> None:
    request = await requested(payments, js, namespace, 300)
    first = await pay(payments, request["reference"], 300)
    notice = await payments.pool.fetchval("SELECT event_id FROM provider_events")
    body = json.dumps(
        {
            "event_id": notice,
            "reference": request["reference"],
            "amount_yen": 999,
            "method": "credit",
            "brand": "Visa",
            "paid_at": "2026-11-24T09:05:00+09:00",
        }
    ).encode()
    ts = int(time.time())
    other = await payments.http.post(
        "/webhooks/provider",
        content=body,
        headers={
            webhook.TIMESTAMP_HEADER: str(ts),
            webhook.SIGNATURE_HEADER: webhook.sign(SECRET, ts, body),
        },
    )
    assert other.status_code == 409
    assert other.json()["detail"]["error"] == "ConfirmationConflict"
    assert await payments.pool.fetchval("SELECT count(*) FROM payments") == 1
    assert first["outcome"] == "captured"


async def test_the_staff_queue_needs_a_staff_credential(provider_env: None, payments: Any) -> None:
    assert (await payments.http.get("/payments/attention")).status_code == 401
    unknown = await act(payments, str(uuid.uuid4()), "refund", "k", amount_yen=1)
    assert (unknown.status_code, unknown.json()["detail"]["error"]) == (404, "UnknownAttention")
    no_key = await payments.http.post(f"/payments/{uuid.uuid4()}/attention/attach", headers=STAFF)
    assert no_key.status_code == 422
