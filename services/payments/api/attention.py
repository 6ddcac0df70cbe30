"""The staff queue (要確認入金): online payments needing a decision, and the two decisions,
refund and attach, each once per Idempotency-Key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from contracts.payments import (
    AttentionReason,
)
from services.payments import errors
from services.payments.api.deps import Ctx, Staff, http_error
from services.payments.handlers import staff_queue
from services.payments.store.attention import attention_item, attention_items
from services.runtime.service import ServiceContext

router = APIRouter()


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
