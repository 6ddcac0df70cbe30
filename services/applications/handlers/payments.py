"""The payments events applications consumes: PaymentCaptured and PaymentAttached mark an
application's fee paid, once, when it is awaiting payment and the amount covers the fee."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import asyncpg

from contracts.envelope import Envelope
from contracts.payments import PaymentAttachedV1, PaymentCapturedV1
from services.applications import domain
from services.applications.domain import ApplicationStatus
from services.applications.handlers.transactions import save_application
from services.applications.store.applications import get_application
from services.runtime.service import ServiceContext

log = logging.getLogger(__name__)


async def on_payment_captured(
    ctx: ServiceContext, conn: asyncpg.Connection, event: Envelope[PaymentCapturedV1]
) -> None:
    """PaymentCaptured for an application's fee: awaiting_payment -> paid (once).

    A capture for no application (a terminal's, or an online payment payments holds for
    staff: late, twice, another amount) changes nothing here.
    """
    captured = event.data
    if captured.application_id is None:
        return
    await _fee_paid(ctx, conn, captured.application_id, captured.payment_id, captured.amount_yen)


async def on_payment_attached(
    ctx: ServiceContext, conn: asyncpg.Connection, event: Envelope[PaymentAttachedV1]
) -> None:
    """Staff attached a payment that needed attention (paid after its request expired, or
    another amount, refunded down to the fee) to its application: it counts as the fee, as a
    PaymentCaptured would. The late-payment rule: payment expiry never closed the application
    (it stayed awaiting_payment), so it goes on to paid where it stood; one no longer awaiting
    payment (withdrawn) keeps its state, and staff refund the payment instead."""
    attached = event.data
    await _fee_paid(ctx, conn, attached.application_id, attached.payment_id, attached.amount_yen)


async def _fee_paid(
    ctx: ServiceContext,
    conn: asyncpg.Connection,
    application_id: uuid.UUID,
    payment_id: uuid.UUID,
    amount_yen: int,
) -> None:
    """awaiting_payment -> paid, once. An application not awaiting payment (already paid,
    withdrawn), or a payment short of the fee, changes nothing and is logged; the inbox has
    already dropped redeliveries."""
    app = await get_application(conn, application_id, for_update=True)
    if app is None or app.status is not ApplicationStatus.AWAITING_PAYMENT:
        log.warning(
            "payment for an application not awaiting payment; ignored",
            extra={
                "application_id": str(application_id),
                "payment_id": str(payment_id),
                "status": app.status.value if app else None,
            },
        )
        return
    if amount_yen < app.fee_yen:
        log.warning(
            "payment of less than the fee; application stays awaiting payment",
            extra={
                "application_id": str(app.id),
                "payment_id": str(payment_id),
                "amount_yen": amount_yen,
                "fee_yen": app.fee_yen,
            },
        )
        return
    paid, events = domain.record_payment(app, payment_id, amount_yen, datetime.now(UTC))
    await save_application(ctx, conn, paid, events)
