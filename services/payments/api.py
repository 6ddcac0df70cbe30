"""Payments' HTTP API: facilities and terminals, payments. Errors map to HTTP here only."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from contracts.envelope import describe_validation_error
from contracts.facilities import FACILITIES
from contracts.payments import ProviderPaymentConfirmation
from services.payments import domain, handlers, store, webhook
from services.payments.settings import payments_settings
from services.runtime.service import ServiceContext, service_context

router = APIRouter(tags=["payments"])
Ctx = Annotated[ServiceContext, Depends(service_context)]

HTTP_STATUS: dict[type[domain.PaymentError], int] = {
    domain.UnknownFacility: 404,
    domain.UnknownTerminal: 404,
    domain.UnknownPayment: 404,
    domain.UnknownReceipt: 404,
    domain.RefundExceedsCapture: 409,
    domain.PaymentAlreadyVoided: 409,
    domain.VoidNotAllowed: 409,
    domain.MismatchedPayment: 409,
    domain.TerminalNotAtFacility: 409,
    domain.UnknownPaymentRequest: 404,
    domain.PaymentRequestClosed: 409,
    domain.AmountMismatch: 409,
    domain.ConfirmationReplayed: 409,
}


def http_error(exc: domain.PaymentError) -> HTTPException:
    """The one place where the payment rules' refusals become HTTP responses."""
    status = next((s for t, s in HTTP_STATUS.items() if isinstance(exc, t)), 400)
    return HTTPException(status, detail={"error": type(exc).__name__, "message": str(exc)})


class FacilityOut(BaseModel):
    """A facility (施設) that takes payments."""

    code: str
    name_ja: str
    kind: str
    paid_for: str


class TerminalOut(BaseModel):
    """A registered terminal (決済端末)."""

    terminal_id: str
    facility_code: str
    kind: str
    registered_at: datetime


@router.get("/facilities", response_model=list[FacilityOut])
async def facilities() -> list[FacilityOut]:
    return [
        FacilityOut(code=f.code, name_ja=f.name_ja, kind=f.kind.value, paid_for=f.paid_for.value)
        for f in FACILITIES
    ]


@router.get("/terminals", response_model=list[TerminalOut])
async def terminals(ctx: Ctx) -> list[TerminalOut]:
    return [
        TerminalOut(
            terminal_id=t.terminal_id,
            facility_code=t.facility_code,
            kind=t.kind,
            registered_at=t.registered_at,
        )
        for t in await store.list_terminals(ctx.pool)
    ]


class PaymentOut(BaseModel):
    """A payment (capture) and what has been refunded or voided since."""

    payment_id: uuid.UUID
    facility_code: str
    terminal_id: str | None
    channel: str
    method: str
    brand: str | None
    amount_yen: int
    refunded_yen: int
    voided: bool
    item: str
    occurred_at: datetime
    receipt_number: str
    application_id: uuid.UUID | None
    card_last4: str | None


@router.get("/payments/{payment_id}", response_model=PaymentOut)
async def payment(payment_id: uuid.UUID, ctx: Ctx) -> PaymentOut:
    row = await ctx.pool.fetchrow("SELECT * FROM payments WHERE payment_id = $1", payment_id)
    if row is None:
        raise http_error(domain.UnknownPayment(f"no payment {payment_id}"))
    return PaymentOut(**{k: row[k] for k in PaymentOut.model_fields})


@router.get(
    "/receipts/{receipt_number}",
    response_class=HTMLResponse,
    summary="A receipt (領収書) as printable HTML; reprints are marked as copies",
)
async def receipt(receipt_number: str, ctx: Ctx) -> HTMLResponse:
    try:
        html = await handlers.print_receipt(ctx.pool, receipt_number)
    except domain.PaymentError as exc:
        raise http_error(exc) from exc
    return HTMLResponse(html)


class PaymentRequestOut(BaseModel):
    """An application fee's payment request: what to pay, where, and until when."""

    request_id: uuid.UUID
    application_id: uuid.UUID
    reference: str
    facility_code: str
    fee_item: str
    amount_yen: int
    status: str
    expires_at: datetime
    payment_id: uuid.UUID | None
    pay_url: str


@router.get("/payment-requests/{application_id}", response_model=PaymentRequestOut)
async def payment_request(application_id: uuid.UUID, ctx: Ctx) -> PaymentRequestOut:
    row = await store.payment_request_of(ctx.pool, application_id)
    if row is None:
        raise http_error(domain.UnknownPaymentRequest(f"no request for {application_id}"))
    base = payments_settings().provider_url.rstrip("/")
    return PaymentRequestOut(
        **{k: row[k] for k in PaymentRequestOut.model_fields if k != "pay_url"},
        pay_url=f"{base}/checkout?reference={row['reference']}&amount_yen={row['amount_yen']}",
    )


class WebhookAccepted(BaseModel):
    payment_id: uuid.UUID


@router.post(
    "/webhooks/provider",
    response_model=WebhookAccepted,
    summary="The payment provider confirms an online payment (HMAC-signed, replays refused)",
    responses={401: {"description": "bad signature or stale timestamp"}, 409: {}},
)
async def provider_webhook(request: Request, ctx: Ctx) -> WebhookAccepted:
    settings = payments_settings()
    if settings.provider_secret is None:
        raise HTTPException(503, detail="PAYMENT_PROVIDER_SECRET is not configured")
    body = await request.body()
    try:
        webhook.verify(
            settings.provider_secret.get_secret_value(),
            request.headers.get(webhook.TIMESTAMP_HEADER),
            request.headers.get(webhook.SIGNATURE_HEADER),
            body,
            now=time.time(),
            tolerance_s=settings.webhook_tolerance_s,
        )
    except webhook.WebhookRefused as exc:
        raise HTTPException(401, detail={"error": "WebhookRefused", "message": str(exc)}) from exc
    try:
        notice = ProviderPaymentConfirmation.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, detail=describe_validation_error(exc)) from exc
    try:
        payment_id = await handlers.confirm_online_payment(ctx.pool, notice, datetime.now(UTC))
    except domain.PaymentError as exc:
        raise http_error(exc) from exc
    return WebhookAccepted(payment_id=payment_id)
