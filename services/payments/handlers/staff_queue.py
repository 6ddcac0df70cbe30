"""The staff queue (要確認入金): online payments that settle nothing by themselves, refunded or
attached to their application by staff, each action once per Idempotency-Key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.payments import (
    PaymentAttachedV1,
)
from services.payments import domain, errors
from services.payments.handlers import IDS, envelope
from services.payments.handlers.refunds import refund_on
from services.payments.store import attention, payment_requests, payments
from services.runtime.outbox import add_events


class AttentionAction:
    REFUND = "refund"
    ATTACH = "attach"


@dataclass(frozen=True)
class AttentionDecision:
    payment_id: uuid.UUID
    replayed: bool
    """True when this Idempotency-Key was used before for the same action: nothing changed."""


async def _attention_for_action(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    idempotency_key: str,
    action: str,
    amount_yen: int | None,
) -> tuple[domain.AttentionState, domain.PaymentState] | None:
    """Lock the item and its payment; None when this key already did this very action."""
    item = await attention.lock_attention(conn, payment_id)
    if item is None:
        raise errors.UnknownAttention(f"payment {payment_id} is not on the staff queue")
    done = await attention.attention_action(conn, payment_id, idempotency_key)
    if done is not None:
        if (done["action"], done["amount_yen"]) != (action, amount_yen):
            raise errors.IdempotencyKeyReused(
                f"Idempotency-Key {idempotency_key!r} was used for another action on this payment"
            )
        return None
    payment = await payments.lock_payment(conn, payment_id)
    assert payment is not None, "every item on the queue is a payment"
    return item, payment


async def refund_attention(
    pool: asyncpg.Pool,
    payment_id: uuid.UUID,
    amount_yen: int,
    staff_id: str,
    idempotency_key: str,
    now: datetime,
) -> AttentionDecision:
    """Staff refund part or all of a payment on the queue through the counter's refund path;
    refunded in full, the item is decided. The same key again refunds once."""
    async with pool.acquire() as conn, conn.transaction():
        found = await _attention_for_action(
            conn, payment_id, idempotency_key, AttentionAction.REFUND, amount_yen
        )
        if found is None:
            return AttentionDecision(payment_id, replayed=True)
        item, payment = found
        all_of_it = domain.decide_attention_refund(item, payment, amount_yen)
        refund_id = uuid.uuid5(IDS, f"attention/{payment_id}/{idempotency_key}")
        await refund_on(conn, payment, refund_id, amount_yen, now, staff_id=staff_id)
        await attention.insert_attention_action(
            conn,
            payment_id,
            idempotency_key,
            AttentionAction.REFUND,
            staff_id,
            now,
            amount_yen=amount_yen,
            refund_id=refund_id,
        )
        if all_of_it:
            await attention.decide_attention(conn, payment_id, "refunded", staff_id, now)
    return AttentionDecision(payment_id, replayed=False)


async def attach_attention(
    pool: asyncpg.Pool, payment_id: uuid.UUID, staff_id: str, idempotency_key: str, now: datetime
) -> AttentionDecision:
    """Staff attach a payment on the queue to its application: it settles the request (paid,
    even if it had expired) and applications hears PaymentAttached. The same key again
    attaches once."""
    async with pool.acquire() as conn, conn.transaction():
        found = await _attention_for_action(
            conn, payment_id, idempotency_key, AttentionAction.ATTACH, None
        )
        if found is None:
            return AttentionDecision(payment_id, replayed=True)
        item, payment = found
        request = await payment_requests.lock_payment_request_by_id(conn, item.request_id)
        assert request is not None, "every item on the queue has its request"
        domain.decide_attach(item, payment, request)
        await payment_requests.mark_request_paid(conn, request.request_id, payment_id)
        await attention.insert_attention_action(
            conn, payment_id, idempotency_key, AttentionAction.ATTACH, staff_id, now
        )
        await attention.decide_attention(conn, payment_id, "attached", staff_id, now)
        await add_events(
            conn,
            [
                envelope(
                    PaymentAttachedV1(
                        payment_id=payment_id,
                        request_id=request.request_id,
                        application_id=request.application_id,
                        reference=request.reference,
                        amount_yen=payment.amount_yen - payment.refunded_yen,
                        attached_at=now,
                    )
                )
            ],
        )
    return AttentionDecision(payment_id, replayed=False)
