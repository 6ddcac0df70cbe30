"""Terminals' transactions (captures, refunds, voids) posted to the ledger once, for ever, under
their (terminal, transaction id) key; a repeat that says something else is refused and finance
told."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from contracts.envelope import Envelope
from contracts.payments import (
    PaymentCapturedV1,
    PaymentChannel,
    PaymentVoidedV1,
    TerminalTransactionConflictV1,
    TerminalTransactionKind,
    TerminalTransactionV1,
    TerminalTransactionVersion,
)
from services.payments import domain, errors, ledger
from services.payments.handlers import IDS, envelope
from services.payments.handlers.captures import posting_of
from services.payments.handlers.refunds import refund_on
from services.payments.store import payments, postings, terminal_transactions, terminals
from services.runtime.outbox import add_events


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
    ids = [uuid.uuid5(IDS, tx.message_id) for tx in txs]
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
        records.append((capture, posting_of(capture)))
    receipts = await payments.record_captures(conn, records)
    await add_events(
        conn,
        [
            envelope(
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
                envelope(
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
    refund_id = uuid.uuid5(IDS, tx.message_id)
    await refund_on(
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
            envelope(
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
