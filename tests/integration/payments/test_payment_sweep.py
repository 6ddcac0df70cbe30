"""The payment sweep: a payment whose webhook never came is found by asking the provider's
status endpoint (the simulator, served over real HTTP), and recorded as its webhook would be."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.payments import PaymentCapturedV1, PaymentNeedsAttentionV1
from services.payments import provider, provider_sim
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import revenue_yen
from tests.integration.payments.test_online_payment import SECRET, STAFF, provider_env
from tests.integration.payments.test_payment_attention import (
    counted_once,
    has_status,
    queue,
    requested,
)
from tests.integration.payments.test_terminal_ingestion import published

__all__ = ["provider_env"]  # a fixture, used by name


@pytest.fixture
def provider_port() -> int:
    return free_port()


@pytest.fixture
def sweeping(provider_env: None, provider_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payments asks the provider at once and often (the defaults: 2 min, then 1-10 min)."""
    monkeypatch.setenv("PAYMENT_PROVIDER_URL", f"http://127.0.0.1:{provider_port}")
    monkeypatch.setenv("PAYMENT_SWEEP_GRACE_S", "0")
    monkeypatch.setenv("PAYMENT_SWEEP_INTERVAL_S", "0.1")
    monkeypatch.setenv("PAYMENT_SWEEP_BACKOFF_S", "0.2")
    monkeypatch.setenv("PAYMENT_SWEEP_BACKOFF_MAX_S", "0.5")


@pytest.fixture
async def provider_site(payments: Any, provider_port: int) -> AsyncIterator[httpx.AsyncClient]:
    """The provider simulator on a real port (its webhooks go to payments' app); a client."""
    app = provider_sim.build_app(SECRET, "/webhooks/provider", client=payments.http)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=provider_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    await wait_for(lambda: asyncio.sleep(0, server.started))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{provider_port}") as client:
            yield client
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving


@pytest.fixture
async def reporting(payments: Any, start_service: Any) -> Any:
    return await start_service("reporting")


async def paid_but_lost(site: httpx.AsyncClient, reference: str, yen: int) -> dict[str, Any]:
    """The citizen pays; the provider takes the money; its webhook is lost on the way."""
    sent = await site.post(
        "/pay", json={"reference": reference, "amount_yen": yen, "deliver": False}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["status_code"] is None
    notice: dict[str, Any] = sent.json()
    return notice


async def test_a_payment_whose_webhook_was_lost_is_found_by_the_sweep(
    sweeping: None,
    payments: Any,
    provider_site: httpx.AsyncClient,
    reporting: Any,
    js: JetStreamContext,
    namespace: str,
) -> None:
    request = await requested(payments, js, namespace, 300)
    lost = await paid_but_lost(provider_site, request["reference"], 300)

    await wait_for(lambda: has_status(payments, request, "paid"))
    captured = await wait_for(lambda: published(js, namespace, PaymentCapturedV1))
    assert [(c["application_id"], c["amount_yen"]) for c in captured] == [
        (request["application_id"], 300)
    ]
    assert await payments.pool.fetchval("SELECT learnt_by FROM provider_events") == "sweep"
    # The provider's retry finally gets through: the first outcome, nothing new.
    late = await payments.http.post(
        "/webhooks/provider", content=lost["body"], headers=lost["headers"]
    )
    assert (late.status_code, late.json()["outcome"]) == (200, "captured")
    assert late.json()["payment_id"] == (await has_payment(payments, request))
    assert await payments.pool.fetchval("SELECT count(*) FROM payments") == 1
    await counted_once(payments, reporting)


async def has_payment(payments: Any, request: dict[str, Any]) -> str:
    answer = await payments.http.get(
        f"/payment-requests/{request['application_id']}", headers=STAFF
    )
    return str(answer.json()["payment_id"])


async def test_a_lost_webhook_of_a_late_payment_is_found_and_queued(
    sweeping: None,
    payments: Any,
    provider_site: httpx.AsyncClient,
    js: JetStreamContext,
    namespace: str,
) -> None:
    request = await requested(payments, js, namespace, 300)
    await payments.pool.execute(  # its time ran out (the expiry job runs every 10 s)
        "UPDATE payment_requests SET status = 'expired', expires_at = now() - interval '1 s'"
    )
    await paid_but_lost(provider_site, request["reference"], 300)

    [item] = await wait_for(lambda: queue(payments))
    assert (item["reasons"], item["learnt_by"]) == (["paid_after_expiry"], "sweep")
    flagged = await wait_for(lambda: published(js, namespace, PaymentNeedsAttentionV1))
    assert flagged[0]["learnt_by"] == "sweep"
    assert await revenue_yen(payments.pool) == 300
    assert (await has_status(payments, request, "expired")) is True


async def test_the_status_endpoint_answers_only_signed_questions(
    provider_site: httpx.AsyncClient,
) -> None:
    reference = f"PR-{uuid.uuid4().hex[:10].upper()}"
    path = provider.status_path(reference)
    assert (await provider_site.get(path)).status_code == 401
    wrong = provider.signed_headers("not-the-secret", "GET", path)
    assert (await provider_site.get(path, headers=wrong)).status_code == 401
    answer = await provider.payment_status(
        provider_site, str(provider_site.base_url), SECRET, reference
    )
    assert answer == provider.ProviderPaymentStatus(reference=reference, notices=[])
