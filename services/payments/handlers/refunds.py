"""Refunds: the one refund path (a terminal's, the counter's or the staff queue's) and the
counter's refund by a staff member (返金)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.payments import (
    PaymentRefundedV1,
)
from services.payments import domain, errors, ledger
from services.payments.handlers import envelope
from services.payments.store import payments, postings
from services.runtime.outbox import add_events


@dataclass(frozen=True)
class StaffRefund:
    refund_id: uuid.UUID
    payment_id: uuid.UUID
    amount_yen: int
    refunded_total_yen: int
    replayed: bool = False


async def refund_by_staff(
    pool: asyncpg.Pool,
    payment_id: uuid.UUID,
    amount_yen: int,
    staff_id: str,
    now: datetime,
    refund_id: uuid.UUID | None = None,
) -> StaffRefund:
    """A refund given at the counter (返金) by a staff member; never above the capture.

    ``refund_id`` makes a retried request safe: the same id refunds once.
    """
    refund_id = refund_id or uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        payment = await payments.lock_payment(conn, payment_id)
        if payment is None:
            raise errors.UnknownPayment(f"no payment {payment_id}")
        earlier = await payments.refund_exists(conn, refund_id)
        if earlier is not None:
            if earlier["payment_id"] != payment_id or earlier["amount_yen"] != amount_yen:
                raise errors.MismatchedPayment(f"refund {refund_id} was for something else")
            return StaffRefund(
                refund_id, payment_id, amount_yen, payment.refunded_yen, replayed=True
            )
        total = await refund_on(conn, payment, refund_id, amount_yen, now, staff_id=staff_id)
    return StaffRefund(refund_id, payment_id, amount_yen, total)


async def refund_on(
    conn: asyncpg.Connection,
    payment: domain.PaymentState,
    refund_id: uuid.UUID,
    amount_yen: int,
    occurred_at: datetime,
    *,
    staff_id: str | None = None,
    terminal_id: str | None = None,
) -> int:
    """The one refund path (a terminal's, the counter's or the staff queue's): refund row,
    ledger, PaymentRefunded; the refunded total."""
    total = domain.decide_refund(payment, amount_yen)
    await payments.record_refund(
        conn, refund_id, payment.payment_id, amount_yen, total, occurred_at, staff_id
    )
    await postings.insert_posting(conn, ledger.refund_posting(payment, amount_yen, occurred_at))
    await add_events(
        conn,
        [
            envelope(
                PaymentRefundedV1(
                    refund_id=refund_id,
                    payment_id=payment.payment_id,
                    facility_code=payment.facility_code,
                    terminal_id=terminal_id,
                    channel=payment.channel,
                    method=payment.method,
                    brand=payment.brand,
                    amount_yen=amount_yen,
                    refunded_total_yen=total,
                    occurred_at=occurred_at,
                )
            )
        ],
    )
    return total
