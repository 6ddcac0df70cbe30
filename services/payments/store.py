"""asyncpg queries on the payments schema (its own tables only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.facilities import FACILITIES
from contracts.payments import PaymentMethod
from services.payments.domain import (
    Entry,
    PaymentRequestState,
    PaymentState,
    Posting,
    PostingKind,
)


async def sync_facilities(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Load the reference list of facilities (contracts.facilities) into the schema."""
    await conn.executemany(
        """INSERT INTO facilities (code, name_ja, kind, paid_for) VALUES ($1, $2, $3, $4)
           ON CONFLICT (code) DO UPDATE
           SET name_ja = EXCLUDED.name_ja, kind = EXCLUDED.kind, paid_for = EXCLUDED.paid_for""",
        [(f.code, f.name_ja, f.kind.value, f.paid_for.value) for f in FACILITIES],
    )


# --- terminals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalRow:
    terminal_id: str
    facility_code: str
    kind: str
    nats_user: str
    registered_at: datetime


async def facility_exists(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM facilities WHERE code = $1", code))


async def insert_terminal(
    conn: asyncpg.Connection, terminal_id: str, facility_code: str, kind: str, nats_user: str
) -> TerminalRow:
    row = await conn.fetchrow(
        """INSERT INTO terminals (terminal_id, facility_code, kind, nats_user)
           VALUES ($1, $2, $3, $4) RETURNING *""",
        terminal_id,
        facility_code,
        kind,
        nats_user,
    )
    assert row is not None
    return TerminalRow(**dict(row))


async def next_terminal_number(conn: asyncpg.Connection, facility_code: str) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM terminals WHERE facility_code = $1", facility_code
    )
    return int(count) + 1


async def get_terminal(
    conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str
) -> TerminalRow | None:
    row = await conn.fetchrow("SELECT * FROM terminals WHERE terminal_id = $1", terminal_id)
    return TerminalRow(**dict(row)) if row else None


async def list_terminals(conn: asyncpg.Connection | asyncpg.Pool) -> list[TerminalRow]:
    rows = await conn.fetch("SELECT * FROM terminals ORDER BY terminal_id")
    return [TerminalRow(**dict(r)) for r in rows]


# --- payments ------------------------------------------------------------------------------


async def claim_terminal_transaction(
    conn: asyncpg.Connection,
    terminal_id: str,
    transaction_id: str,
    kind: str,
    payment_id: uuid.UUID,
    amount_yen: int,
    occurred_at: datetime,
) -> bool:
    """Record a terminal's transaction id; False when it was posted before (for ever)."""
    inserted = await conn.fetchval(
        """INSERT INTO terminal_transactions
               (terminal_id, transaction_id, kind, payment_id, amount_yen, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (terminal_id, transaction_id) DO NOTHING RETURNING true""",
        terminal_id,
        transaction_id,
        kind,
        payment_id,
        amount_yen,
        occurred_at,
    )
    return bool(inserted)


async def transaction_seen(conn: asyncpg.Connection, terminal_id: str, transaction_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM terminal_transactions WHERE terminal_id = $1 AND transaction_id = $2",
            terminal_id,
            transaction_id,
        )
    )


async def next_receipt_serial(conn: asyncpg.Connection, facility_code: str, year: int) -> int:
    serial = await conn.fetchval(
        """INSERT INTO receipt_counters (facility_code, fiscal_year, last_number)
           VALUES ($1, $2, 1)
           ON CONFLICT (facility_code, fiscal_year)
           DO UPDATE SET last_number = receipt_counters.last_number + 1
           RETURNING last_number""",
        facility_code,
        year,
    )
    return int(serial)


@dataclass(frozen=True)
class NewPayment:
    payment_id: uuid.UUID
    facility_code: str
    terminal_id: str | None
    channel: str
    method: PaymentMethod
    brand: str | None
    amount_yen: int
    item: str
    occurred_at: datetime
    receipt_number: str
    fiscal_year: int
    receipt_serial: int
    application_id: uuid.UUID | None = None
    card_token: str | None = None
    card_last4: str | None = None


async def insert_payment(conn: asyncpg.Connection, p: NewPayment) -> None:
    await conn.execute(
        """INSERT INTO payments (payment_id, facility_code, terminal_id, channel, method, brand,
                                 amount_yen, item, occurred_at, receipt_number, application_id,
                                 card_token, card_last4)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        p.payment_id,
        p.facility_code,
        p.terminal_id,
        p.channel,
        p.method.value,
        p.brand,
        p.amount_yen,
        p.item,
        p.occurred_at,
        p.receipt_number,
        p.application_id,
        p.card_token,
        p.card_last4,
    )
    await conn.execute(
        """INSERT INTO receipts (receipt_number, facility_code, fiscal_year, serial, payment_id)
           VALUES ($1, $2, $3, $4, $5)""",
        p.receipt_number,
        p.facility_code,
        p.fiscal_year,
        p.receipt_serial,
        p.payment_id,
    )


def _state(row: asyncpg.Record) -> PaymentState:
    return PaymentState(
        payment_id=row["payment_id"],
        facility_code=row["facility_code"],
        method=PaymentMethod(row["method"]),
        brand=row["brand"],
        amount_yen=int(row["amount_yen"]),
        refunded_yen=int(row["refunded_yen"]),
        voided=bool(row["voided"]),
    )


async def lock_payment(conn: asyncpg.Connection, payment_id: uuid.UUID) -> PaymentState | None:
    row = await conn.fetchrow("SELECT * FROM payments WHERE payment_id = $1 FOR UPDATE", payment_id)
    return _state(row) if row else None


async def lock_payment_of_transaction(
    conn: asyncpg.Connection, terminal_id: str, transaction_id: str
) -> PaymentState | None:
    row = await conn.fetchrow(
        """SELECT p.* FROM payments p
           JOIN terminal_transactions t ON t.payment_id = p.payment_id AND t.kind = 'capture'
           WHERE t.terminal_id = $1 AND t.transaction_id = $2
           FOR UPDATE OF p""",
        terminal_id,
        transaction_id,
    )
    return _state(row) if row else None


async def record_refund(
    conn: asyncpg.Connection,
    refund_id: uuid.UUID,
    payment_id: uuid.UUID,
    amount_yen: int,
    refunded_total_yen: int,
    occurred_at: datetime,
    staff_id: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO refunds (refund_id, payment_id, amount_yen, occurred_at, staff_id)
           VALUES ($1, $2, $3, $4, $5)""",
        refund_id,
        payment_id,
        amount_yen,
        occurred_at,
        staff_id,
    )
    await conn.execute(
        "UPDATE payments SET refunded_yen = $2 WHERE payment_id = $1",
        payment_id,
        refunded_total_yen,
    )


async def mark_voided(conn: asyncpg.Connection, payment_id: uuid.UUID) -> None:
    await conn.execute("UPDATE payments SET voided = true WHERE payment_id = $1", payment_id)


# --- the ledger ----------------------------------------------------------------------------


async def insert_posting(conn: asyncpg.Connection, posting: Posting) -> None:
    await conn.execute(
        """INSERT INTO postings (posting_id, facility_code, kind, payment_id, reverses,
                                 business_date, memo)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        posting.posting_id,
        posting.facility_code,
        posting.kind.value,
        posting.payment_id,
        posting.reverses,
        posting.business_date,
        posting.memo,
    )
    await conn.executemany(
        """INSERT INTO ledger_entries (posting_id, account, debit_yen, credit_yen)
           VALUES ($1, $2, $3, $4)""",
        [(posting.posting_id, e.account, e.debit_yen, e.credit_yen) for e in posting.entries],
    )


async def capture_posting_of(conn: asyncpg.Connection, payment_id: uuid.UUID) -> Posting | None:
    row = await conn.fetchrow(
        "SELECT * FROM postings WHERE payment_id = $1 AND kind = 'capture'", payment_id
    )
    if row is None:
        return None
    entries = await conn.fetch(
        "SELECT * FROM ledger_entries WHERE posting_id = $1 ORDER BY entry_id", row["posting_id"]
    )
    return Posting(
        posting_id=row["posting_id"],
        kind=PostingKind(row["kind"]),
        facility_code=row["facility_code"],
        business_date=row["business_date"],
        entries=tuple(
            Entry(e["account"], int(e["debit_yen"]), int(e["credit_yen"])) for e in entries
        ),
        payment_id=row["payment_id"],
        reverses=row["reverses"],
        memo=row["memo"],
    )


async def unbalanced_postings(conn: asyncpg.Connection | asyncpg.Pool) -> list[uuid.UUID]:
    """Postings whose debits differ from their credits (always empty; tests check it)."""
    rows = await conn.fetch(
        """SELECT p.posting_id FROM postings p
           LEFT JOIN ledger_entries e ON e.posting_id = p.posting_id
           GROUP BY p.posting_id
           HAVING coalesce(sum(e.debit_yen), 0) <> coalesce(sum(e.credit_yen), 0)
               OR count(e.entry_id) = 0"""
    )
    return [r["posting_id"] for r in rows]


# --- receipts ------------------------------------------------------------------------------


async def print_receipt(conn: asyncpg.Connection, receipt_number: str) -> asyncpg.Record | None:
    """Count one more print of a receipt; the row with ``prints`` before this one."""
    return await conn.fetchrow(
        """WITH printed AS (
               UPDATE receipts SET prints = prints + 1 WHERE receipt_number = $1
               RETURNING payment_id, prints - 1 AS earlier_prints)
           SELECT p.*, f.name_ja AS facility_name, printed.earlier_prints
           FROM printed JOIN payments p USING (payment_id)
           JOIN facilities f ON f.code = p.facility_code""",
        receipt_number,
    )


# --- online payment requests ---------------------------------------------------------------


async def insert_payment_request(
    conn: asyncpg.Connection,
    request_id: uuid.UUID,
    application_id: uuid.UUID,
    reference: str,
    facility_code: str,
    fee_item: str,
    amount_yen: int,
    requested_at: datetime,
    expires_at: datetime,
) -> bool:
    """A new payment request; False when the application already has one."""
    inserted = await conn.fetchval(
        """INSERT INTO payment_requests (request_id, application_id, reference, facility_code,
                                         fee_item, amount_yen, requested_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (application_id) DO NOTHING RETURNING true""",
        request_id,
        application_id,
        reference,
        facility_code,
        fee_item,
        amount_yen,
        requested_at,
        expires_at,
    )
    return bool(inserted)


def _request(row: asyncpg.Record) -> PaymentRequestState:
    return PaymentRequestState(
        request_id=row["request_id"],
        application_id=row["application_id"],
        reference=row["reference"],
        facility_code=row["facility_code"],
        fee_item=row["fee_item"],
        amount_yen=int(row["amount_yen"]),
        status=row["status"],
        expires_at=row["expires_at"],
    )


async def lock_payment_request(
    conn: asyncpg.Connection, reference: str
) -> PaymentRequestState | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_requests WHERE reference = $1 FOR UPDATE", reference
    )
    return _request(row) if row else None


async def payment_request_of(
    conn: asyncpg.Connection | asyncpg.Pool, application_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM payment_requests WHERE application_id = $1", application_id
    )


async def mark_request_paid(
    conn: asyncpg.Connection, request_id: uuid.UUID, payment_id: uuid.UUID
) -> None:
    await conn.execute(
        """UPDATE payment_requests SET status = 'paid', payment_id = $2, closed_at = now()
           WHERE request_id = $1""",
        request_id,
        payment_id,
    )


async def remember_provider_event(conn: asyncpg.Connection, event_id: str, reference: str) -> bool:
    """False when this provider notice was accepted before."""
    inserted = await conn.fetchval(
        """INSERT INTO provider_events (event_id, reference) VALUES ($1, $2)
           ON CONFLICT (event_id) DO NOTHING RETURNING true""",
        event_id,
        reference,
    )
    return bool(inserted)


async def expire_due_requests(
    conn: asyncpg.Connection, now: datetime, limit: int = 500
) -> list[PaymentRequestState]:
    rows = await conn.fetch(
        """UPDATE payment_requests SET status = 'expired', closed_at = $1
           WHERE request_id IN (
               SELECT request_id FROM payment_requests
               WHERE status = 'pending' AND expires_at <= $1
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING *""",
        now,
        limit,
    )
    return [_request(r) for r in rows]
