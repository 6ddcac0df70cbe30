"""Payments' HTTP API: facilities and terminals, payments. Errors map to HTTP here only."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.envelope import describe_validation_error
from contracts.facilities import FACILITIES
from contracts.payments import (
    AttentionReason,
    PaymentMethod,
    ProviderPaymentConfirmation,
    SettlementBatch,
    SettlementDifference,
)
from services.payments import errors, webhook
from services.payments.handlers import online, receipts, reconciliation, refunds, staff_queue
from services.payments.settings import payments_settings
from services.payments.store import settlements as settlement_store
from services.payments.store.attention import attention_item, attention_items
from services.payments.store.payment_requests import payment_request_of
from services.payments.store.payments import find_payments
from services.payments.store.terminals import list_terminals
from services.runtime.auth import Who, caller, require_staff, staff_credentials
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters
from services.runtime.service import ServiceContext, service_context

router = APIRouter(
    tags=["payments"],
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route identifies its caller and counts it against the caller's rate limit. Staff
routes need PAYMENTS_STAFF_TOKENS; a payment request is its applicant's (or staff's); the
facilities are public; the provider's webhook is authenticated by its HMAC signature."""
Ctx = Annotated[ServiceContext, Depends(service_context)]
MAX_DAYS = 366
"""The longest date range an unpaged staff query (revenue, settlements) may span."""


async def staff_member(ctx: Ctx, who: Who) -> str:
    """The staff member calling (``Authorization: Bearer <token>``, PAYMENTS_STAFF_TOKENS)."""
    if not staff_credentials(ctx).staff_tokens:
        raise HTTPException(503, detail="PAYMENTS_STAFF_TOKENS is not configured")
    staff_id = require_staff(who).staff_id
    assert staff_id is not None
    return staff_id


def _check_range(date_from: date, date_to: date) -> None:
    if date_to < date_from:
        raise HTTPException(422, detail="to: must not be before from")
    if (date_to - date_from).days >= MAX_DAYS:
        raise HTTPException(422, detail=f"to: at most {MAX_DAYS} days after from")


Staff = Annotated[str, Depends(staff_member)]

HTTP_STATUS: dict[type[errors.PaymentError], int] = {
    errors.UnknownFacility: 404,
    errors.UnknownTerminal: 404,
    errors.UnknownPayment: 404,
    errors.UnknownReceipt: 404,
    errors.RefundExceedsCapture: 409,
    errors.PaymentAlreadyVoided: 409,
    errors.VoidNotAllowed: 409,
    errors.MismatchedPayment: 409,
    errors.TerminalNotAtFacility: 409,
    errors.UnknownPaymentRequest: 404,
    errors.ConfirmationConflict: 409,
    errors.UnknownAttention: 404,
    errors.AttentionAlreadyDecided: 409,
    errors.AttachNotAllowed: 409,
    errors.IdempotencyKeyReused: 422,
}


def http_error(exc: errors.PaymentError) -> HTTPException:
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
async def terminals(ctx: Ctx, _staff: Staff) -> list[TerminalOut]:
    return [
        TerminalOut(
            terminal_id=t.terminal_id,
            facility_code=t.facility_code,
            kind=t.kind,
            registered_at=t.registered_at,
        )
        for t in await list_terminals(ctx.pool)
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


class AttentionActionOut(BaseModel):
    """What a staff member did about a payment on the queue, and when."""

    action: str
    """refund or attach"""
    amount_yen: int | None
    staff_id: str
    acted_at: datetime


class AttentionOut(BaseModel):
    """An online payment captured although it settles nothing by itself (要確認入金): paid
    after its request expired, paid twice, or another amount; open until staff refund it in
    full or attach it to its application."""

    payment_id: uuid.UUID
    reference: str
    application_id: uuid.UUID
    facility_code: str
    reasons: list[AttentionReason]
    amount_yen: int
    requested_yen: int
    refunded_yen: int
    method: str
    brand: str | None
    receipt_number: str
    paid_at: datetime
    expires_at: datetime
    received_at: datetime
    learnt_by: str
    status: str
    """open or decided"""
    resolution: str | None
    """refunded or attached, once decided"""
    decided_by: str | None
    decided_at: datetime | None
    actions: list[AttentionActionOut]


def _attention_out(row: Mapping[str, Any]) -> AttentionOut:
    fields = {k: row[k] for k in AttentionOut.model_fields if k != "actions"}
    return AttentionOut(
        **fields,
        actions=[AttentionActionOut.model_validate(a) for a in json.loads(row["actions"])],
    )


IdempotencyKeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Required: the same key again does the action once and answers 200.",
    ),
]


@router.get(
    "/payments/attention",
    response_model=list[AttentionOut],
    summary="The staff queue: online payments needing a decision (要確認入金), oldest first",
)
async def attention(
    ctx: Ctx,
    _staff: Staff,
    status: Annotated[
        Literal["open", "decided", "all"], Query(description="open (default), decided or all")
    ] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[AttentionOut]:
    rows = await attention_items(ctx.pool, None if status == "all" else status, limit)
    return [_attention_out(r) for r in rows]


class AttentionRefundRequest(BaseModel):
    """Refund a payment on the staff queue, in full or in part, through the refund path."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"amount_yen": 300}]})

    amount_yen: int = Field(gt=0, description="Integer yen; never above what is left.")


async def _decided(
    ctx: ServiceContext, response: Response, decision: staff_queue.AttentionDecision
) -> AttentionOut:
    if decision.replayed:
        response.status_code = 200
    row = await attention_item(ctx.pool, decision.payment_id)
    assert row is not None
    return _attention_out(row)


@router.post(
    "/payments/{payment_id}/attention/refund",
    response_model=AttentionOut,
    status_code=201,
    summary="Refund a payment on the staff queue (in full: decided); Idempotency-Key required",
    responses={200: {"description": "This key was used before: nothing changed."}},
)
async def refund_attention(
    payment_id: uuid.UUID,
    body: AttentionRefundRequest,
    key: IdempotencyKeyHeader,
    ctx: Ctx,
    staff: Staff,
    response: Response,
) -> AttentionOut:
    try:
        decision = await staff_queue.refund_attention(
            ctx.pool, payment_id, body.amount_yen, staff, key, datetime.now(UTC)
        )
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    return await _decided(ctx, response, decision)


@router.post(
    "/payments/{payment_id}/attention/attach",
    response_model=AttentionOut,
    status_code=201,
    summary="Attach a payment on the staff queue to its application (充当); Idempotency-Key "
    "required",
    responses={200: {"description": "This key was used before: nothing changed."}},
)
async def attach_attention(
    payment_id: uuid.UUID, key: IdempotencyKeyHeader, ctx: Ctx, staff: Staff, response: Response
) -> AttentionOut:
    try:
        decision = await staff_queue.attach_attention(
            ctx.pool, payment_id, staff, key, datetime.now(UTC)
        )
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    return await _decided(ctx, response, decision)


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


class SettlementOutcomeOut(BaseModel):
    """The outcome of a settlement batch: reconciled (調定済) or the differences."""

    batch_id: str
    status: str
    reported_yen: int
    fee_yen: int
    net_yen: int
    differences: list[SettlementDifference]


@router.post(
    "/settlements",
    response_model=SettlementOutcomeOut,
    status_code=201,
    responses={
        200: {"model": SettlementOutcomeOut, "description": "Seen before: its first outcome."}
    },
    summary="A facility's day settlement batch (調定): compared with the ledger",
)
async def post_settlement(
    batch: SettlementBatch, ctx: Ctx, _staff: Staff, response: Response
) -> SettlementOutcomeOut:
    try:
        outcome = await reconciliation.reconcile_settlement(ctx.pool, batch)
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    response.status_code = 200 if outcome.replayed else 201
    return SettlementOutcomeOut(
        batch_id=outcome.batch_id,
        status="reconciled" if outcome.reconciled else "mismatch",
        reported_yen=outcome.reported_yen,
        fee_yen=outcome.fee_yen,
        net_yen=outcome.reported_yen - outcome.fee_yen,
        differences=outcome.differences,
    )


class RevenueDay(BaseModel):
    """Revenue of a facility on a day: gross (recorded in full), processor fee, net."""

    facility_code: str
    business_date: date
    gross_yen: int
    fee_yen: int
    net_yen: int
    reconciliation: str
    """reconciled, mismatch or unreconciled (no settlement batch yet)."""


async def _revenue(
    ctx: ServiceContext, facility: str | None, date_from: date, date_to: date
) -> list[RevenueDay]:
    _check_range(date_from, date_to)
    rows = await settlement_store.revenue_by_day(ctx.pool, facility, date_from, date_to)
    return [RevenueDay(**{k: r[k] for k in RevenueDay.model_fields}) for r in rows]


FromDate = Annotated[date, Query(alias="from", description="First day (Asia/Tokyo).")]
ToDate = Annotated[date, Query(alias="to", description="Last day (Asia/Tokyo), included.")]
FacilityFilter = Annotated[
    str | None, Query(alias="facility", pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")
]


@router.get("/revenue", response_model=list[RevenueDay], summary="Revenue per facility per day")
async def revenue(
    ctx: Ctx, _staff: Staff, date_from: FromDate, date_to: ToDate, facility: FacilityFilter = None
) -> list[RevenueDay]:
    return await _revenue(ctx, facility, date_from, date_to)


CSV_COLUMNS = (
    "facility_code",
    "business_date",
    "gross_yen",
    "fee_yen",
    "net_yen",
    "reconciliation",
)


@router.get(
    "/revenue.csv",
    response_class=Response,
    summary="Revenue per facility per day as CSV, for the finance office",
)
async def revenue_csv(
    ctx: Ctx, _staff: Staff, date_from: FromDate, date_to: ToDate, facility: FacilityFilter = None
) -> Response:
    days = await _revenue(ctx, facility, date_from, date_to)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for day in days:
        writer.writerow([getattr(day, c) for c in CSV_COLUMNS])
    filename = f"revenue-{date_from}-{date_to}.csv"
    return Response(
        out.getvalue().encode("utf-8-sig"),  # with a BOM, so spreadsheet software reads UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


class SettlementOut(BaseModel):
    """A settlement batch received and how it compared with the ledger."""

    batch_id: str
    facility_code: str
    business_date: date
    processor: str
    status: str
    reported_yen: int
    fee_yen: int
    differences: list[SettlementDifference]
    received_at: datetime


@router.get(
    "/settlements",
    response_model=list[SettlementOut],
    summary="Reconciliation status (調定): settlement batches by facility and day",
)
async def settlements(
    ctx: Ctx, _staff: Staff, date_from: FromDate, date_to: ToDate, facility: FacilityFilter = None
) -> list[SettlementOut]:
    _check_range(date_from, date_to)
    rows = await settlement_store.settlements(ctx.pool, facility, date_from, date_to)
    return [
        SettlementOut(
            **{k: r[k] for k in SettlementOut.model_fields if k != "differences"},
            differences=[
                SettlementDifference.model_validate(d) for d in json.loads(r["differences"])
            ],
        )
        for r in rows
    ]
