"""A small payment-provider simulator (決済代行 simulator) for `cityhall up` and the tests.

It stands in for the online payment provider: a citizen opens ``/checkout?reference=…&
amount_yen=…`` (the ``pay_url`` payments gives out), presses pay, and the simulator sends the
signed webhook (``X-Provider-Timestamp``, ``X-Provider-Signature``) to payments, exactly as the
real provider would. ``POST /pay`` does the same for scripts and tests (``"deliver": false``
takes the money and loses the webhook, as a network may). ``GET /payments/{reference}`` is the
status endpoint real providers offer: every payment taken for the reference, as the notices
the webhook sends (payments' sweep asks it; signed requests only, see
``services.payments.provider``).

Run alone: ``python -m services.payments.provider_sim --port 8090`` with
``PAYMENT_PROVIDER_SECRET`` and ``PAYMENTS_WEBHOOK_URL`` in the environment.
"""

from __future__ import annotations

import argparse
import html
import json
import secrets
import string
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.payments import PaymentMethod
from services.payments import provider, webhook
from services.payments.provider import ProviderPaymentStatus

_ID_ALPHABET = string.ascii_letters + string.digits


def event_id() -> str:
    """A provider's notice id, like ``evt_3fQk9ZpL2xW8cR1m``: letters and digits mixed.

    Not hex: payments refuses any payload holding a run of 12 or more digits (it could be a
    card number), and about one hex id of 16 characters in a hundred holds such a run.
    """
    return "evt_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    secret: SecretStr = Field(validation_alias=AliasChoices("PAYMENT_PROVIDER_SECRET"))
    webhook_url: str = Field(
        default="http://127.0.0.1:8002/webhooks/provider",
        validation_alias=AliasChoices("PAYMENTS_WEBHOOK_URL"),
    )


class Pay(BaseModel):
    """Pay a payment request at the simulated provider."""

    reference: str = Field(min_length=1, max_length=40)
    amount_yen: int = Field(gt=0)
    method: PaymentMethod = PaymentMethod.CREDIT
    brand: str = Field(default="Visa", min_length=1, max_length=40)
    deliver: bool = Field(
        default=True, description="False: take the money but never send the webhook (lost)."
    )


class SentNotice(BaseModel):
    """A webhook the simulator sent, as sent (tests replay it)."""

    body: str
    headers: dict[str, str]
    status_code: int | None
    """None when the webhook was not sent (``deliver: false``)."""
    response: Any = None


def _notice_of(pay: Pay) -> dict[str, Any]:
    """The notice the provider sends for a payment it took (a new notice id, paid now)."""
    return {
        "event_id": event_id(),
        "reference": pay.reference,
        "amount_yen": pay.amount_yen,
        "method": pay.method.value,
        "brand": pay.brand,
        "paid_at": datetime.now(UTC).isoformat(),
    }


def _signed_headers(secret: str, body: str) -> dict[str, str]:
    """A webhook's headers: its timestamp and its HMAC signature over both."""
    ts = int(time.time())
    return {
        "content-type": "application/json",
        webhook.TIMESTAMP_HEADER: str(ts),
        webhook.SIGNATURE_HEADER: webhook.sign(secret, ts, body.encode()),
    }


async def _deliver(
    client: httpx.AsyncClient | None, webhook_url: str, body: str, headers: dict[str, str]
) -> SentNotice:
    """Post a signed webhook to payments (with ``client`` when given); what payments answered."""
    try:
        if client is not None:
            response = await client.post(webhook_url, content=body, headers=headers)
        else:
            async with httpx.AsyncClient(timeout=10.0) as own:
                response = await own.post(webhook_url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise HTTPException(502, detail=f"webhook to payments failed: {exc!r}") from exc
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    return SentNotice(body=body, headers=headers, status_code=response.status_code, response=answer)


def _checkout_page(reference: str, amount_yen: int) -> str:
    """The checkout a citizen opens from payments' ``pay_url``: one button that pays."""
    ref = html.escape(reference)
    return f"""<!DOCTYPE html><html lang="ja"><meta charset="utf-8">
<title>お支払い {ref}</title><h1>お支払い (simulator)</h1>
<p>お支払い番号 {ref}: ¥{amount_yen:,}</p>
<button onclick="fetch('/pay', {{method: 'POST', headers: {{'content-type':
'application/json'}}, body: JSON.stringify({{reference: {json.dumps(reference)},
amount_yen: {amount_yen}}})}}).then(r => r.json()).then(j =>
document.getElementById('out').textContent = JSON.stringify(j.response))">支払う (pay)</button>
<pre id="out"></pre></html>"""


def build_app(secret: str, webhook_url: str, client: httpx.AsyncClient | None = None) -> FastAPI:
    """The simulator; ``client`` (tests) posts the webhooks instead of a new HTTP client."""
    app = FastAPI(title="payment provider simulator", version="0.1.0")
    sent: list[SentNotice] = []
    app.state.sent = sent

    taken: dict[str, list[dict[str, Any]]] = {}  # reference -> the notices of its payments
    app.state.taken = taken

    async def notify(pay: Pay) -> SentNotice:
        notice = _notice_of(pay)
        taken.setdefault(pay.reference, []).append(notice)  # the money is taken, sent or not
        body = json.dumps(notice)
        headers = _signed_headers(secret, body)
        if not pay.deliver:
            sent.append(SentNotice(body=body, headers=headers, status_code=None))
            return sent[-1]
        notice_sent = await _deliver(client, webhook_url, body, headers)
        sent.append(notice_sent)
        return notice_sent

    @app.get("/payments/{reference}", response_model=ProviderPaymentStatus)
    async def payment_status(reference: str, request: Request) -> ProviderPaymentStatus:
        """What was taken for a reference (the status endpoint payments' sweep asks)."""
        path = provider.status_path(reference)
        try:
            webhook.verify(
                secret,
                request.headers.get(webhook.TIMESTAMP_HEADER),
                request.headers.get(webhook.SIGNATURE_HEADER),
                f"GET {path}".encode(),
                now=time.time(),
                tolerance_s=300,
            )
        except webhook.WebhookRefused as exc:
            raise HTTPException(401, detail=str(exc)) from exc
        return ProviderPaymentStatus.model_validate(
            {"reference": reference, "notices": taken.get(reference, [])}
        )

    @app.post("/pay", response_model=SentNotice)
    async def pay(request: Pay) -> SentNotice:
        return await notify(request)

    @app.get("/checkout", response_class=HTMLResponse)
    async def checkout(reference: str, amount_yen: int) -> HTMLResponse:
        return HTMLResponse(_checkout_page(reference, amount_yen))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    settings = SimulatorSettings()  # type: ignore[call-arg]
    app = build_app(settings.secret.get_secret_value(), settings.webhook_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
