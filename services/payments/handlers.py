"""Payments' handlers: load, decide (domain), save state + ledger + outbox in one transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope, Event
from contracts.facilities import FACILITIES_BY_CODE
from contracts.payments import (
    AttentionReason,
    ConfirmationSource,
    PaymentAttachedV1,
    PaymentCapturedV1,
    PaymentChannel,
    PaymentNeedsAttentionV1,
    PaymentRefundedV1,
    PaymentRequestExpiredV1,
    PaymentVoidedV1,
    ProviderPaymentConfirmation,
    SettlementBatch,
    SettlementDifference,
    SettlementMismatchV1,
    SettlementReconciledV1,
    TerminalSettlementV1,
    TerminalTransactionConflictV1,
    TerminalTransactionKind,
    TerminalTransactionV1,
    TerminalTransactionVersion,
    terminal_settlement_subject,
    terminal_subject,
)
from services.payments import domain, errors, ledger
from services.payments.receipts import ReceiptView, render_receipt
from services.payments.store import (
    attention,
    payment_requests,
    payments,
    postings,
    settlements,
    terminal_transactions,
    terminals,
)
from services.runtime.outbox import add_events

_IDS = uuid.UUID("4d1b7c1e-9a53-4f5e-8d0c-0f3a1c2b7e11")
"""Namespace of the name-based (uuid5) ids payments derives from terminal transaction ids, so
that the same transaction always gets the same payment id."""


def _event(data: Event) -> Envelope[Event]:
    return Envelope.new(data)


# --- registry ------------------------------------------------------------------------------


class TerminalKind:
    MULTI_PAYMENT = "multi_payment"
    """マルチ決済端末"""
    POS_REGISTER = "pos_register"
    """POSレジ"""

    ALL = (MULTI_PAYMENT, POS_REGISTER)


@dataclass(frozen=True)
class TerminalIdentity:
    """What a terminal is and may publish as: its id, facility and own subjects. Its NATS
    credential is an nkey whose seed only the terminal holds (cityhall terminals register)."""

    terminal_id: str
    facility_code: str
    kind: str

    @property
    def subject(self) -> str:
        """Relative to the namespace: terminals.<facility>.<terminal>.tx.v1"""
        return terminal_subject(self.facility_code, self.terminal_id)

    @property
    def settlement_subject(self) -> str:
        """Where it publishes its day's settlement batch (terminals.<f>.<t>.settlement.v1)."""
        return terminal_settlement_subject(self.facility_code, self.terminal_id)

    @property
    def inbox_prefix(self) -> str:
        """The terminal's own reply subjects (JetStream acks); it may read no others."""
        return f"_INBOX_{self.terminal_id}"


async def register_terminal(
    pool: asyncpg.Pool,
    facility_code: str,
    kind: str = TerminalKind.MULTI_PAYMENT,
    *,
    public_key: str | None = None,
    issued_by: str = "cityhall",
) -> TerminalIdentity:
    """Register a new terminal at a facility, with the public half of its NATS nkey when
    given (without one, it can publish nothing until ``rotate_terminal_key`` issues one)."""
    if facility_code not in FACILITIES_BY_CODE:
        raise errors.UnknownFacility(f"no facility has the code {facility_code!r}")
    if kind not in TerminalKind.ALL:
        raise ValueError(f"terminal kind must be one of {', '.join(TerminalKind.ALL)}")
    async with pool.acquire() as conn, conn.transaction():
        await terminals.sync_facilities(conn)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", facility_code)
        number = await terminals.next_terminal_number(conn, facility_code)
        terminal_id = f"{facility_code}-t{number:02d}"
        row = await terminals.insert_terminal(conn, terminal_id, facility_code, kind, terminal_id)
        if public_key is not None:
            await terminals.issue_terminal_key(conn, terminal_id, public_key, issued_by)
    return TerminalIdentity(row.terminal_id, row.facility_code, row.kind)


async def rotate_terminal_key(
    pool: asyncpg.Pool, terminal_id: str, public_key: str, issued_by: str
) -> TerminalIdentity:
    """Put a new key in force for a terminal; the old one is revoked in the same transaction."""
    async with pool.acquire() as conn, conn.transaction():
        row = await terminals.get_terminal(conn, terminal_id)
        if row is None:
            raise errors.UnknownTerminal(f"no terminal {terminal_id!r} is registered")
        await terminals.revoke_terminal_key(conn, terminal_id, issued_by, "rotated")
        await terminals.issue_terminal_key(conn, terminal_id, public_key, issued_by)
    return TerminalIdentity(row.terminal_id, row.facility_code, row.kind)


async def revoke_terminal(
    pool: asyncpg.Pool, terminal_id: str, revoked_by: str, reason: str
) -> str | None:
    """Revoke a terminal's key in force (a device lost, stolen or retired); its public key, or
    None when it had none in force (revoking twice changes nothing)."""
    async with pool.acquire() as conn, conn.transaction():
        if await terminals.get_terminal(conn, terminal_id) is None:
            raise errors.UnknownTerminal(f"no terminal {terminal_id!r} is registered")
        return await terminals.revoke_terminal_key(conn, terminal_id, revoked_by, reason)


# --- terminal transactions -----------------------------------------------------------------


async def record_terminal_transactions(
    conn: asyncpg.Connection,
    events: Sequence[Envelope[TerminalTransactionV1]],
    known_terminals: dict[str, str] | None = None,
) -> None:
    """Post terminals' captures, refunds and voids once, for ever, each with its event, in the
    order they came: each run of captures with a few statements for the whole run, a refund or
    void on its own (it reads the capture it reverses, which may be in the run before it).

    ``known_terminals`` (terminal id -> facility) spares a query per batch: a terminal's
    facility never changes once registered, and only registered terminals are remembered.
    """
    known = known_terminals if known_terminals is not None else {}
    unknown = {e.data.terminal_id for e in events} - known.keys()
    if unknown:
        known.update(await terminals.facilities_of_terminals(conn, sorted(unknown)))
    for event in events:
        tx = event.data
        facility = known.get(tx.terminal_id)
        if facility is None:
            raise errors.UnknownTerminal(f"terminal {tx.terminal_id!r} is not registered")
        if facility != tx.facility_code:
            raise errors.TerminalNotAtFacility(
                f"terminal {tx.terminal_id!r} is registered to {facility!r}, "
                f"not {tx.facility_code!r}"
            )
    captures: list[TerminalTransactionV1] = []
    for event in events:
        tx = event.data
        if tx.kind is TerminalTransactionKind.CAPTURE:
            captures.append(tx)
            continue
        await _capture_many(conn, captures)
        captures = []
        if tx.kind is TerminalTransactionKind.REFUND:
            await _refund(conn, tx)
        else:
            await _void(conn, tx)
    await _capture_many(conn, captures)


async def _claim(
    conn: asyncpg.Connection, tx: TerminalTransactionV1, payment_id: uuid.UUID
) -> bool:
    """Take the (terminal, transaction id) key; False when it was posted before, maybe long
    ago (nothing must change then)."""
    return bool(
        await terminal_transactions.claim_terminal_transactions(conn, [_claim_of(tx, payment_id)])
    )


def _claim_of(
    tx: TerminalTransactionV1, payment_id: uuid.UUID
) -> terminal_transactions.TerminalClaim:
    return terminal_transactions.TerminalClaim(
        tx.terminal_id, tx.transaction_id, tx.kind.value, payment_id, tx.amount_yen, tx.occurred_at
    )


async def _capture_many(conn: asyncpg.Connection, txs: Sequence[TerminalTransactionV1]) -> None:
    """Captures: claim their keys, then post the new ones (payment, receipt, ledger) and
    announce each as PaymentCaptured, a statement per table for all of them; a key posted
    before with other content is refused (``_refuse_conflicts``)."""
    if not txs:
        return
    ids = [uuid.uuid5(_IDS, tx.message_id) for tx in txs]
    claimed = await terminal_transactions.claim_terminal_transactions(
        conn, [_claim_of(tx, pid) for tx, pid in zip(txs, ids, strict=True)]
    )
    new: list[tuple[TerminalTransactionV1, uuid.UUID]] = []
    repeats: list[TerminalTransactionV1] = []
    for tx, payment_id in zip(txs, ids, strict=True):
        key = (tx.terminal_id, tx.transaction_id)
        if key in claimed:
            claimed.discard(key)  # a second copy in the same run is a repeat of the first
            new.append((tx, payment_id))
        else:
            repeats.append(tx)
    await _post_captures(conn, new)
    await _refuse_conflicts(conn, repeats)  # after posting: a repeat may be of this run's


async def _post_captures(
    conn: asyncpg.Connection, new: Sequence[tuple[TerminalTransactionV1, uuid.UUID]]
) -> None:
    if not new:
        return
    records = []
    for tx, payment_id in new:
        capture = payments.NewCapture(
            payment_id=payment_id,
            facility_code=tx.facility_code,
            terminal_id=tx.terminal_id,
            channel=PaymentChannel.TERMINAL.value,
            method=tx.method,
            brand=tx.brand,
            amount_yen=tx.amount_yen,
            item=tx.item,
            occurred_at=tx.occurred_at,
            fiscal_year=domain.fiscal_year(tx.occurred_at),
            card_token=tx.card.token if tx.card else None,
            card_last4=tx.card.last4 if tx.card else None,
        )
        records.append((capture, _posting_of(capture)))
    receipts = await payments.record_captures(conn, records)
    await add_events(
        conn,
        [
            _event(
                PaymentCapturedV1(
                    payment_id=payment_id,
                    facility_code=tx.facility_code,
                    terminal_id=tx.terminal_id,
                    channel=PaymentChannel.TERMINAL,
                    method=tx.method,
                    brand=tx.brand,
                    amount_yen=tx.amount_yen,
                    item=tx.item,
                    occurred_at=tx.occurred_at,
                    receipt_number=receipt,
                )
            )
            for (tx, payment_id), receipt in zip(new, receipts, strict=True)
        ],
    )


def _version_of(tx: TerminalTransactionV1) -> TerminalTransactionVersion:
    capture = tx.kind is TerminalTransactionKind.CAPTURE
    return TerminalTransactionVersion(
        kind=tx.kind,
        method=tx.method,
        brand=tx.brand,
        amount_yen=tx.amount_yen,
        item=tx.item if capture else None,
        occurred_at=tx.occurred_at,
        original_transaction_id=tx.original_transaction_id,
    )


async def _refuse_conflicts(
    conn: asyncpg.Connection, repeats: Sequence[TerminalTransactionV1]
) -> None:
    """Transactions whose key was posted before: nothing happens when they say what was
    posted (a harmless duplicate); one that says something else raises
    ``TerminalTransactionConflict`` (dead-lettered with both versions, finance told)."""
    if not repeats:
        return
    posted = await terminal_transactions.posted_versions(
        conn, [(tx.terminal_id, tx.transaction_id) for tx in repeats]
    )
    for tx in repeats:
        version = posted.get((tx.terminal_id, tx.transaction_id))
        received = _version_of(tx)
        if version is not None and not domain.same_terminal_transaction(version, received):
            raise errors.TerminalTransactionConflict(
                tx.terminal_id, tx.transaction_id, tx.facility_code, version, received
            )


async def announce_terminal_conflict(
    conn: asyncpg.Connection, conflict: errors.TerminalTransactionConflict, now: datetime
) -> None:
    """Keep a refused conflicting repeat and tell finance (TerminalTransactionConflict), once
    per distinct repeat. Run in a transaction of its own as the repeat is dead-lettered: the
    one that refused it rolled back."""
    if await terminal_transactions.insert_terminal_conflict(
        conn,
        conflict.terminal_id,
        conflict.transaction_id,
        conflict.facility_code,
        conflict.posted,
        conflict.received,
        now,
    ):
        await add_events(
            conn,
            [
                _event(
                    TerminalTransactionConflictV1(
                        terminal_id=conflict.terminal_id,
                        transaction_id=conflict.transaction_id,
                        facility_code=conflict.facility_code,
                        posted=conflict.posted,
                        received=conflict.received,
                        detected_at=now,
                    )
                )
            ],
        )


def _posting_of(capture: payments.NewCapture) -> ledger.Posting:
    return ledger.capture_posting(
        capture.payment_id,
        capture.facility_code,
        capture.method,
        capture.brand,
        capture.amount_yen,
        capture.occurred_at,
    )


async def _record_capture(conn: asyncpg.Connection, capture: payments.NewCapture) -> str:
    """Payment, receipt number and balanced ledger posting; returns the receipt number."""
    return await payments.record_capture(conn, capture, _posting_of(capture))


async def _original(conn: asyncpg.Connection, tx: TerminalTransactionV1) -> domain.PaymentState:
    assert tx.original_transaction_id is not None
    terminal = tx.original_terminal_id or tx.terminal_id
    payment = await payments.lock_payment_of_transaction(conn, terminal, tx.original_transaction_id)
    if payment is None:
        raise errors.OriginalNotYetPosted(
            f"no capture {tx.original_transaction_id!r} on terminal {terminal!r} (yet)"
        )
    if payment.facility_code != tx.facility_code:
        raise errors.MismatchedPayment(
            f"capture {tx.original_transaction_id!r} belongs to {payment.facility_code!r}"
        )
    return payment


async def _refund(conn: asyncpg.Connection, tx: TerminalTransactionV1) -> None:
    payment = await _original(conn, tx)
    if not await _claim(conn, tx, payment.payment_id):
        await _refuse_conflicts(conn, [tx])
        return
    refund_id = uuid.uuid5(_IDS, tx.message_id)
    await _refund_on(
        conn, payment, refund_id, tx.amount_yen, tx.occurred_at, terminal_id=tx.terminal_id
    )


async def _void(conn: asyncpg.Connection, tx: TerminalTransactionV1) -> None:
    payment = await _original(conn, tx)
    if not await _claim(conn, tx, payment.payment_id):
        await _refuse_conflicts(conn, [tx])
        return
    domain.decide_void(payment, tx.amount_yen)
    capture = await postings.capture_posting_of(conn, payment.payment_id)
    assert capture is not None, "every payment has its capture posting"
    await payments.mark_voided(conn, payment.payment_id)
    await postings.insert_posting(
        conn, ledger.reversal_of(capture, ledger.PostingKind.VOID, tx.occurred_at)
    )
    await add_events(
        conn,
        [
            _event(
                PaymentVoidedV1(
                    payment_id=payment.payment_id,
                    facility_code=payment.facility_code,
                    terminal_id=tx.terminal_id,
                    method=payment.method,
                    brand=payment.brand,
                    amount_yen=payment.amount_yen,
                    occurred_at=tx.occurred_at,
                )
            )
        ],
    )


# --- receipts ------------------------------------------------------------------------------


async def print_receipt(pool: asyncpg.Pool, receipt_number: str) -> str:
    """The receipt as printable HTML; every print after the first is marked as a copy."""
    async with pool.acquire() as conn, conn.transaction():
        row = await payments.print_receipt(conn, receipt_number)
    if row is None:
        raise errors.UnknownReceipt(f"no receipt {receipt_number!r}")
    view = ReceiptView(
        receipt_number=row["receipt_number"],
        facility_name=row["facility_name"],
        item=row["item"],
        amount_yen=int(row["amount_yen"]),
        method=row["method"],
        brand=row["brand"],
        card_last4=row["card_last4"],
        occurred_at=row["occurred_at"],
        refunded_yen=int(row["refunded_yen"]),
        voided=bool(row["voided"]),
    )
    return render_receipt(view, copy=row["earlier_prints"] > 0)


# --- online payment of application fees ----------------------------------------------------


async def create_payment_request(
    conn: asyncpg.Connection,
    event: Envelope[ApplicationPaymentRequestedV1],
    ttl_s: float,
    sweep_grace_s: float = 0.0,
) -> None:
    """On an application's fee request, open a payment request (once per application); the
    sweep first asks the provider about it ``sweep_grace_s`` later."""
    req = event.data
    request_id = uuid.uuid5(_IDS, f"application/{req.application_id}")
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
    again returns the first outcome and changes nothing."""
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
        payment_id = uuid.uuid5(_IDS, f"provider-notice/{notice.event_id}")
        receipt = await _record_capture(
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
        settles = not reasons
        events: list[Event] = [
            PaymentCapturedV1(
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
        ]
        if settles:
            await payment_requests.mark_request_paid(conn, request.request_id, payment_id)
        else:
            await attention.insert_attention(
                conn,
                payment_id,
                request.request_id,
                reasons,
                request.amount_yen,
                now,
                learnt_by.value,
            )
            events.append(
                PaymentNeedsAttentionV1(
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
            )
        outcome = ConfirmationOutcome(payment_id, reasons)
        await payment_requests.record_notice_outcome(
            conn, notice.event_id, payment_id, outcome.outcome
        )
        await add_events(conn, [_event(e) for e in events])
    return outcome


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
                _event(
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


# --- daily reconciliation (調定) ------------------------------------------------------------


@dataclass(frozen=True)
class SettlementOutcome:
    batch_id: str
    reconciled: bool
    differences: list[SettlementDifference]
    reported_yen: int
    fee_yen: int
    replayed: bool = False
    """True when this batch id had been received before (the first outcome is returned)."""


async def reconcile_settlement(pool: asyncpg.Pool, batch: SettlementBatch) -> SettlementOutcome:
    """Compare a day's settlement batch with the ledger; post the fee and the remittance;
    announce SettlementReconciled or SettlementMismatch. Once per batch id."""
    async with pool.acquire() as conn, conn.transaction():
        return await reconcile_settlement_on(conn, batch)


async def record_terminal_settlement(
    conn: asyncpg.Connection, event: Envelope[TerminalSettlementV1]
) -> None:
    """A terminal's own settlement batch: only for the facility it is registered to."""
    settlement = event.data
    terminal = await terminals.get_terminal(conn, settlement.terminal_id)
    if terminal is None:
        raise errors.UnknownTerminal(f"terminal {settlement.terminal_id!r} is not registered")
    if terminal.facility_code != settlement.batch.facility_code:
        raise errors.TerminalNotAtFacility(
            f"terminal {settlement.terminal_id!r} is registered to {terminal.facility_code!r}, "
            f"not {settlement.batch.facility_code!r}"
        )
    await reconcile_settlement_on(conn, settlement.batch)


async def reconcile_settlement_on(
    conn: asyncpg.Connection, batch: SettlementBatch
) -> SettlementOutcome:
    """``reconcile_settlement`` inside the caller's transaction."""
    if batch.facility_code not in FACILITIES_BY_CODE:
        raise errors.UnknownFacility(f"no facility has the code {batch.facility_code!r}")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"settlement/{batch.batch_id}")
    earlier = await settlements.settlement(conn, batch.batch_id)
    if earlier is not None:
        return SettlementOutcome(
            batch_id=batch.batch_id,
            reconciled=earlier["status"] == "reconciled",
            differences=[
                SettlementDifference.model_validate(d) for d in json.loads(earlier["differences"])
            ],
            reported_yen=int(earlier["reported_yen"]),
            fee_yen=int(earlier["fee_yen"]),
            replayed=True,
        )
    accounts = [ledger.receivable_account(line.method, line.brand) for line in batch.lines]
    book = await settlements.ledger_day(conn, batch.facility_code, batch.business_date, accounts)
    differences = ledger.reconcile(batch.lines, book)
    posting = ledger.settlement_posting(batch.facility_code, batch.business_date, batch.lines)
    if posting is not None:
        await postings.insert_posting(conn, posting)
    await settlements.insert_settlement(
        conn, batch, differences, posting.posting_id if posting else None
    )
    reported = sum(line.amount_yen for line in batch.lines)
    fee = sum(line.fee_yen for line in batch.lines)
    event: Event
    if differences:
        event = SettlementMismatchV1(
            batch_id=batch.batch_id,
            facility_code=batch.facility_code,
            business_date=batch.business_date,
            differences=differences,
        )
    else:
        event = SettlementReconciledV1(
            batch_id=batch.batch_id,
            facility_code=batch.facility_code,
            business_date=batch.business_date,
            gross_yen=reported,
            fee_yen=fee,
            net_yen=reported - fee,
        )
    await add_events(conn, [_event(event)])
    return SettlementOutcome(
        batch_id=batch.batch_id,
        reconciled=not differences,
        differences=differences,
        reported_yen=reported,
        fee_yen=fee,
    )


# --- staff refunds -------------------------------------------------------------------------


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
        total = await _refund_on(conn, payment, refund_id, amount_yen, now, staff_id=staff_id)
    return StaffRefund(refund_id, payment_id, amount_yen, total)


async def _refund_on(
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
            _event(
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


# --- the staff queue: online payments that need a decision (要確認入金) ----------------------


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
        refund_id = uuid.uuid5(_IDS, f"attention/{payment_id}/{idempotency_key}")
        await _refund_on(conn, payment, refund_id, amount_yen, now, staff_id=staff_id)
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
                _event(
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
