"""Application fees paid online: the applicant's payment request (what to pay, where, until
when) and the provider's HMAC-signed webhook confirming a payment."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ValidationError

from contracts.envelope import describe_validation_error
from contracts.payments import (
    AttentionReason,
    ProviderPaymentConfirmation,
)
from services.payments import errors, webhook
from services.payments.api.deps import Ctx, http_error
from services.payments.handlers import online
from services.payments.settings import payments_settings
from services.payments.store.payment_requests import payment_request_of
from services.runtime.auth import Who

router = APIRouter()


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
async def payment_request(application_id: uuid.UUID, ctx: Ctx, who: Who) -> PaymentRequestOut:
    """The applicant whose fee it is, or staff; anyone else gets 404, as for no request."""
    row = await payment_request_of(ctx.pool, application_id)
    if row is None or not who.may_see(row["applicant_id"]):
        raise http_error(errors.UnknownPaymentRequest(f"no request for {application_id}"))
    base = payments_settings(ctx).provider_url.rstrip("/")
    return PaymentRequestOut(
        **{k: row[k] for k in PaymentRequestOut.model_fields if k != "pay_url"},
        pay_url=f"{base}/checkout?reference={row['reference']}&amount_yen={row['amount_yen']}",
    )


class WebhookAccepted(BaseModel):
    """The notice was taken: the money is recorded. ``outcome`` says whether it settled its
    request (captured) or waits on the staff queue (needs_attention, with the reasons). The
    same notice again gets the same answer."""

    payment_id: uuid.UUID
    outcome: Literal["captured", "needs_attention"]
    reasons: list[AttentionReason]


@router.post(
    "/webhooks/provider",
    response_model=WebhookAccepted,
    summary="The payment provider confirms an online payment (HMAC-signed; the same notice "
    "again gets the first answer)",
    responses={401: {"description": "bad signature or stale timestamp"}, 409: {}},
)
async def provider_webhook(request: Request, ctx: Ctx) -> WebhookAccepted:
    settings = payments_settings(ctx)
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
        done = await online.confirm_online_payment(ctx.pool, notice, datetime.now(UTC))
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    return WebhookAccepted(
        payment_id=done.payment_id,
        outcome="needs_attention" if done.reasons else "captured",
        reasons=list(done.reasons),
    )
