"""Online payment of application fees: a request per application, the provider's notices
(webhook or sweep) captured once each, settling the request or queued for staff, requests that
expire, and when the sweep asks the provider next."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Link

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope, Event
from contracts.facilities import FACILITIES_BY_CODE
from contracts.payments import (
    AttentionReason,
    ConfirmationSource,
    PaymentCapturedV1,
    PaymentChannel,
    PaymentNeedsAttentionV1,
    PaymentRequestExpiredV1,
    ProviderPaymentConfirmation,
)
from services.payments import domain, errors
from services.payments.handlers import IDS, envelope
from services.payments.handlers.captures import record_capture
from services.payments.store import attention, payment_requests, payments
from services.runtime.outbox import add_events
from services.runtime.telemetry import (
    context_from_headers,
    current_trace_headers,
    tag_current_span,
)

tracer = trace.get_tracer("cityhall.payments")


async def create_payment_request(
    conn: asyncpg.Connection,
    event: Envelope[ApplicationPaymentRequestedV1],
    ttl_s: float,
    sweep_grace_s: float = 0.0,
) -> None:
    """On an application's fee request, open a payment request (once per application); the
    sweep first asks the provider about it ``sweep_grace_s`` later."""
    req = event.data
    request_id = uuid.uuid5(IDS, f"application/{req.application_id}")
    if req.facility_code not in FACILITIES_BY_CODE:
        raise errors.UnknownFacility(f"no facility has the code {req.facility_code!r}")
    await payment_requests.insert_payment_request(
        conn,
        request_id=request_id,
        application_id=req.application_id,
        reference=domain.payment_reference(request_id),
        facility_code=req.facility_code,
        fee_item=req.fee_item,
        amount_yen=req.amount_yen,
        requested_at=req.requested_at,
        expires_at=req.requested_at + timedelta(seconds=ttl_s),
        applicant_id=req.applicant_id,
        next_check_at=req.requested_at + timedelta(seconds=sweep_grace_s),
        trace_headers=current_trace_headers(),
    )


@dataclass(frozen=True)
class ConfirmationOutcome:
    """What became of a provider's notice: the payment it captured and whether that payment
    settled its request or waits on the staff queue (and why)."""

    payment_id: uuid.UUID
    reasons: tuple[AttentionReason, ...]
    replayed: bool = False
    """True when this notice was received before: its first outcome, nothing changed."""

    @property
    def outcome(self) -> str:
        return "needs_attention" if self.reasons else "captured"


async def confirm_online_payment(
    pool: asyncpg.Pool,
    notice: ProviderPaymentConfirmation,
    now: datetime,
    learnt_by: ConfirmationSource = ConfirmationSource.WEBHOOK,
) -> ConfirmationOutcome:
    """The provider says a request was paid (its webhook, or its status endpoint asked by the
    sweep: both come here). The money is captured whatever the request's state, with its
    receipt, ledger posting and PaymentCaptured; paid in time and in full it settles the
    request, otherwise it goes on the staff queue (PaymentNeedsAttention). The same notice id
    again returns the first outcome and changes nothing.

    Traced as a span of the payment request's own trace (the provider does not send ours),
    linked to the span it arrived in (the webhook's HTTP request, or the sweep's)."""
    headers = await payment_requests.trace_headers_of(pool, notice.reference)
    arrived = trace.get_current_span().get_span_context()
    with tracer.start_as_current_span(
        f"provider notice ({learnt_by.value})",
        context=context_from_headers(headers) if headers.get("traceparent") else None,
        links=[Link(arrived)] if arrived.is_valid else [],
        attributes={"cityhall.payment_reference": notice.reference},
    ):
        return await _confirm(pool, notice, now, learnt_by)


async def _confirm(
    pool: asyncpg.Pool,
    notice: ProviderPaymentConfirmation,
    now: datetime,
    learnt_by: ConfirmationSource,
) -> ConfirmationOutcome:
    async with pool.acquire() as conn, conn.transaction():
        earlier = await payment_requests.claim_provider_notice(
            conn, notice.event_id, notice.reference, notice.amount_yen, learnt_by.value
        )
        if earlier is not None:
            return await _earlier_outcome(conn, notice, earlier)
        request = await payment_requests.lock_payment_request(conn, notice.reference)
        if request is None:
            raise errors.UnknownPaymentRequest(f"no payment request {notice.reference!r}")
        reasons = domain.decide_confirmation(request, notice.amount_yen, now)
        payment_id = uuid.uuid5(IDS, f"provider-notice/{notice.event_id}")
        receipt = await _capture_notice(conn, notice, request, payment_id)
        settles = not reasons
        events: list[Event] = [_captured(notice, request, payment_id, receipt, settles=settles)]
        if settles:
            await payment_requests.mark_request_paid(conn, request.request_id, payment_id)
        else:
            events.append(
                await _queue_for_staff(
                    conn, notice, request, payment_id, receipt, reasons, now, learnt_by
                )
            )
        outcome = ConfirmationOutcome(payment_id, reasons)
        tag_current_span(payment_id=payment_id, application_id=request.application_id)
        await payment_requests.record_notice_outcome(
            conn, notice.event_id, payment_id, outcome.outcome
        )
        await add_events(conn, [envelope(e) for e in events])
    return outcome


async def _capture_notice(
    conn: asyncpg.Connection,
    notice: ProviderPaymentConfirmation,
    request: domain.PaymentRequestState,
    payment_id: uuid.UUID,
) -> str:
    """The notice's money as an online payment of the request's fee; its receipt number."""
    return await record_capture(
        conn,
        payments.NewCapture(
            payment_id=payment_id,
            facility_code=request.facility_code,
            terminal_id=None,
            channel=PaymentChannel.ONLINE.value,
            method=notice.method,
            brand=notice.brand,
            amount_yen=notice.amount_yen,
            item=request.fee_item,
            occurred_at=notice.paid_at,
            fiscal_year=domain.fiscal_year(notice.paid_at),
            application_id=request.application_id,
        ),
    )


def _captured(
    notice: ProviderPaymentConfirmation,
    request: domain.PaymentRequestState,
    payment_id: uuid.UUID,
    receipt: str,
    *,
    settles: bool,
) -> PaymentCapturedV1:
    """PaymentCaptured; it names the application only when it settles the request."""
    return PaymentCapturedV1(
        payment_id=payment_id,
        facility_code=request.facility_code,
        channel=PaymentChannel.ONLINE,
        method=notice.method,
        brand=notice.brand,
        amount_yen=notice.amount_yen,
        item=request.fee_item,
        occurred_at=notice.paid_at,
        receipt_number=receipt,
        application_id=request.application_id if settles else None,
    )


async def _queue_for_staff(
    conn: asyncpg.Connection,
    notice: ProviderPaymentConfirmation,
    request: domain.PaymentRequestState,
    payment_id: uuid.UUID,
    receipt: str,
    reasons: tuple[AttentionReason, ...],
    now: datetime,
    learnt_by: ConfirmationSource,
) -> PaymentNeedsAttentionV1:
    """Put a payment that cannot settle its request on the staff queue; the event saying so."""
    await attention.insert_attention(
        conn,
        payment_id,
        request.request_id,
        reasons,
        request.amount_yen,
        now,
        learnt_by.value,
    )
    return PaymentNeedsAttentionV1(
        payment_id=payment_id,
        request_id=request.request_id,
        application_id=request.application_id,
        reference=request.reference,
        facility_code=request.facility_code,
        reasons=list(reasons),
        amount_yen=notice.amount_yen,
        requested_yen=request.amount_yen,
        paid_at=notice.paid_at,
        expires_at=request.expires_at,
        received_at=now,
        learnt_by=learnt_by,
        receipt_number=receipt,
    )


async def _earlier_outcome(
    conn: asyncpg.Connection, notice: ProviderPaymentConfirmation, earlier: asyncpg.Record
) -> ConfirmationOutcome:
    """A notice id accepted before: the same notice (a provider retrying, a sweep finding what
    a webhook brought) gets its first outcome; another one under that id is refused."""
    if (earlier["reference"], earlier["amount_yen"]) != (notice.reference, notice.amount_yen):
        raise errors.ConfirmationConflict(
            f"notice {notice.event_id!r} was for {earlier['reference']} "
            f"({earlier['amount_yen']} yen), not {notice.reference} ({notice.amount_yen} yen)"
        )
    item = await attention.lock_attention(conn, earlier["payment_id"])
    return ConfirmationOutcome(earlier["payment_id"], item.reasons if item else (), replayed=True)


async def expire_payment_requests(pool: asyncpg.Pool, now: datetime) -> int:
    """Cancel the pending requests whose time ran out; announce each. Returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        expired = await payment_requests.expire_due_requests(conn, now)
        await add_events(
            conn,
            [
                envelope(
                    PaymentRequestExpiredV1(
                        request_id=r.request_id,
                        application_id=r.application_id,
                        reference=r.reference,
                        amount_yen=r.amount_yen,
                        expired_at=now,
                    )
                )
                for r in expired
            ],
        )
    return len(expired)


async def requests_to_check(
    pool: asyncpg.Pool,
    now: datetime,
    *,
    backoff_s: float,
    backoff_max_s: float,
    horizon_s: float,
    limit: int = 100,
) -> list[str]:
    """The references the sweep should ask the provider about now; each one's next question
    is scheduled (back-off) before it is asked, so a provider that does not answer is not
    asked again at once."""
    async with pool.acquire() as conn, conn.transaction():
        due = await payment_requests.requests_to_check(conn, now, horizon_s, limit)
        await payment_requests.schedule_checks(
            conn,
            [r.request_id for r in due],
            [
                now
                + timedelta(
                    seconds=domain.next_check_after_s(r.checks + 1, backoff_s, backoff_max_s)
                )
                for r in due
            ],
        )
    return [r.reference for r in due]
