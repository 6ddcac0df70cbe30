"""Online payment of application fees: request, signed provider webhook, capture, expiry."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope
from contracts.payments import PaymentCapturedV1
from services.payments import provider_sim, webhook
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.payments.test_terminal_ingestion import published

SECRET = "test-provider-secret"
STAFF_TOKEN = "tok-finance-0000001"
STAFF = {
    "Authorization": f"Bearer {STAFF_TOKEN}"
}  # a payment request is its applicant's or staff's


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_PROVIDER_SECRET", SECRET)
    monkeypatch.setenv("PAYMENT_PROVIDER_URL", "http://provider.test")
    monkeypatch.setenv("PAYMENTS_STAFF_TOKENS", f"kaikei01={STAFF_TOKEN}")


def fee_requested(amount_yen: int = 300) -> Envelope[ApplicationPaymentRequestedV1]:
    return Envelope.new(
        ApplicationPaymentRequestedV1(
            application_id=uuid.uuid4(),
            procedure_code="JUMINHYO",
            amount_yen=amount_yen,
            fee_item="住民票の写し",
            facility_code="shiminka",
            requested_at=datetime.now(UTC),
        ),
        source="/cityhall/applications",
    )


async def request_of(payments: Any, application_id: uuid.UUID) -> dict[str, Any]:
    async def found() -> dict[str, Any]:
        response = await payments.http.get(f"/payment-requests/{application_id}", headers=STAFF)
        return response.json() if response.status_code == 200 else {}  # type: ignore[no-any-return]

    result: dict[str, Any] = await wait_for(found)
    return result


def simulator(payments: Any) -> httpx.AsyncClient:
    app = provider_sim.build_app(SECRET, "/webhooks/provider", client=payments.http)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://provider")


async def test_a_fee_paid_at_the_provider_is_captured_with_the_application_id(
    provider_env: None, payments: Any, js: JetStreamContext, namespace: str
) -> None:
    requested = fee_requested(300)
    await publish_envelope(js, namespace, requested)
    application_id = requested.data.application_id
    request = await request_of(payments, application_id)
    assert (request["status"], request["amount_yen"]) == ("pending", 300)
    assert request["pay_url"].startswith("http://provider.test/checkout?reference=PR-")

    async with simulator(payments) as provider:
        paid = await provider.post(
            "/pay", json={"reference": request["reference"], "amount_yen": 300, "brand": "JCB"}
        )
    assert paid.json()["status_code"] == 200, paid.text
    captured = await wait_for(lambda: published(js, namespace, PaymentCapturedV1))

    assert captured[0]["application_id"] == str(application_id)
    assert captured[0]["channel"] == "online"
    assert captured[0]["amount_yen"] == 300
    assert captured[0]["receipt_number"].startswith("shiminka-")
    assert (await request_of(payments, application_id))["status"] == "paid"


async def test_a_forged_or_stale_webhook_is_refused(
    provider_env: None, payments: Any, js: JetStreamContext, namespace: str
) -> None:
    requested = fee_requested(750)
    await publish_envelope(js, namespace, requested)
    request = await request_of(payments, requested.data.application_id)
    async with simulator(payments) as provider:
        paid = await provider.post(
            "/pay", json={"reference": request["reference"], "amount_yen": 750}
        )
    notice = paid.json()
    assert notice["status_code"] == 200, paid.text

    body = json.loads(notice["body"]) | {"event_id": "evt_forged", "amount_yen": 1}
    forged = await payments.http.post(
        "/webhooks/provider", content=json.dumps(body), headers=notice["headers"]
    )
    assert forged.status_code == 401
    assert "signature does not match" in forged.json()["detail"]["message"]

    stale_ts = int(time.time()) - 3600
    raw = json.dumps(body).encode()
    stale = await payments.http.post(
        "/webhooks/provider",
        content=raw,
        headers={
            webhook.TIMESTAMP_HEADER: str(stale_ts),
            webhook.SIGNATURE_HEADER: webhook.sign(SECRET, stale_ts, raw),
        },
    )
    assert stale.status_code == 401
    assert "timestamp" in stale.json()["detail"]["message"]
    assert await payments.pool.fetchval("SELECT count(*) FROM payments") == 1


async def test_an_unknown_reference_is_refused_and_remembers_nothing(
    provider_env: None, payments: Any
) -> None:
    async with simulator(payments) as provider:
        unknown = await provider.post("/pay", json={"reference": "PR-NOSUCH", "amount_yen": 450})
    assert unknown.json()["status_code"] == 404
    assert unknown.json()["response"]["detail"]["error"] == "UnknownPaymentRequest"
    assert await payments.pool.fetchval("SELECT count(*) FROM payments") == 0
    assert await payments.pool.fetchval("SELECT count(*) FROM provider_events") == 0


async def test_an_invalid_webhook_body_names_the_field(provider_env: None, payments: Any) -> None:
    raw = json.dumps({"event_id": "evt_1", "reference": "PR-X", "amount_yen": "lots"}).encode()
    ts = int(time.time())
    response = await payments.http.post(
        "/webhooks/provider",
        content=raw,
        headers={
            webhook.TIMESTAMP_HEADER: str(ts),
            webhook.SIGNATURE_HEADER: webhook.sign(SECRET, ts, raw),
        },
    )
    assert response.status_code == 422
    assert "amount_yen" in response.json()["detail"]
