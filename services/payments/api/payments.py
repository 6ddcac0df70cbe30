"""Payments for staff: the search by facility, day and method, one payment, its refund at the
counter (返金) and its receipt (領収書)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts.payments import (
    PaymentMethod,
)
from services.payments import errors
from services.payments.api.deps import Ctx, Staff, http_error
from services.payments.handlers import receipts, refunds
from services.payments.store.payments import find_payments

router = APIRouter()


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


PaymentMethodFilter = Annotated[
    PaymentMethod | None, Query(alias="method", description="qr, emoney, credit or cash")
]


@router.get(
    "/payments", response_model=list[PaymentOut], summary="Payments by facility, day, method"
)
async def payments(
    ctx: Ctx,
    _staff: Staff,
    date_from: Annotated[date, Query(alias="from", description="First day (Asia/Tokyo).")],
    date_to: Annotated[date, Query(alias="to", description="Last day (Asia/Tokyo), included.")],
    facility: Annotated[
        str | None, Query(alias="facility", pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")
    ] = None,
    method: PaymentMethodFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[PaymentOut]:
    if date_to < date_from:  # any span: the page (limit) bounds the answer
        raise HTTPException(422, detail="to: must not be before from")
    rows = await find_payments(
        ctx.pool, facility, date_from, date_to, method.value if method else None, limit
    )
    return [PaymentOut(**{k: r[k] for k in PaymentOut.model_fields}) for r in rows]


class RefundRequest(BaseModel):
    """A refund at the counter (返金)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount_yen": 300, "refund_id": None}]},
    )

    amount_yen: int = Field(gt=0, description="Integer yen; never above what is left.")
    refund_id: uuid.UUID | None = Field(
        default=None, description="Send the same id again to retry safely: it refunds once."
    )


class RefundOut(BaseModel):
    refund_id: uuid.UUID
    payment_id: uuid.UUID
    amount_yen: int
    refunded_total_yen: int


@router.post(
    "/payments/{payment_id}/refunds",
    response_model=RefundOut,
    status_code=201,
    summary="Refund (返金) by a staff member; 409 above what was captured",
    responses={409: {"description": "RefundExceedsCapture, PaymentAlreadyVoided"}},
)
async def refund(
    payment_id: uuid.UUID, body: RefundRequest, ctx: Ctx, staff: Staff, response: Response
) -> RefundOut:
    try:
        done = await refunds.refund_by_staff(
            ctx.pool, payment_id, body.amount_yen, staff, datetime.now(UTC), body.refund_id
        )
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    if done.replayed:
        response.status_code = 200
    return RefundOut(
        refund_id=done.refund_id,
        payment_id=done.payment_id,
        amount_yen=done.amount_yen,
        refunded_total_yen=done.refunded_total_yen,
    )


@router.get("/payments/{payment_id}", response_model=PaymentOut)
async def payment(payment_id: uuid.UUID, ctx: Ctx, _staff: Staff) -> PaymentOut:
    row = await ctx.pool.fetchrow("SELECT * FROM payments WHERE payment_id = $1", payment_id)
    if row is None:
        raise http_error(errors.UnknownPayment(f"no payment {payment_id}"))
    return PaymentOut(**{k: row[k] for k in PaymentOut.model_fields})


@router.get(
    "/receipts/{receipt_number}",
    response_class=HTMLResponse,
    summary="A receipt (領収書) as printable HTML; reprints are marked as copies",
)
async def receipt(receipt_number: str, ctx: Ctx, _staff: Staff) -> HTMLResponse:
    try:
        html = await receipts.print_receipt(ctx.pool, receipt_number)
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    return HTMLResponse(html)
