"""Payments' rows: captures with their numbered receipts, refunds and voids, receipt prints,
and the staff's search."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from contracts.payments import (
    PaymentChannel,
    PaymentMethod,
)
from services.payments.domain import PaymentState
from services.payments.domain import receipt_number as format_receipt_number
from services.payments.ledger import Posting
from services.payments.store import postings
from services.runtime import db


@dataclass(frozen=True)
class NewCapture:
    """A capture whose receipt number the database assigns (see ``record_capture``)."""

    payment_id: uuid.UUID
    facility_code: str
    terminal_id: str | None
    channel: str
    method: PaymentMethod
    brand: str | None
    amount_yen: int
    item: str
    occurred_at: datetime
    fiscal_year: int
    application_id: uuid.UUID | None = None
    card_token: str | None = None
    card_last4: str | None = None


async def record_capture(conn: asyncpg.Connection, p: NewCapture, posting: Posting) -> str:
    """Number the receipt, write the payment, its receipt and its ledger posting; return the
    receipt number."""
    [number] = await record_captures(conn, [(p, posting)])
    return number


_PAYMENT_COLUMNS = (
    "payment_id", "facility_code", "terminal_id", "channel", "method", "brand", "amount_yen",
    "item", "occurred_at", "receipt_number", "application_id", "card_token", "card_last4",
    "fiscal_year", "receipt_serial",
)  # fmt: skip


async def record_captures(
    conn: asyncpg.Connection, captures: Sequence[tuple[NewCapture, Posting]]
) -> list[str]:
    """Number the receipts, then write the payments (each with its receipt's fiscal year and
    serial) and balanced ledger postings of many captures with one statement per table
    (ingestion speed); the receipt numbers, in order.

    Receipts are numbered per facility and fiscal year (``domain.receipt_number``) in the
    order of ``captures`` (``_receipt_serials``).
    """
    serials = await _receipt_serials(conn, [c for c, _ in captures])
    numbers = [
        format_receipt_number(c.facility_code, c.fiscal_year, n)
        for (c, _), n in zip(captures, serials, strict=True)
    ]
    await _append_payments(conn, [c for c, _ in captures], numbers, serials)
    await postings.insert_postings(conn, [posting for _, posting in captures])
    return numbers


async def _receipt_serials(conn: asyncpg.Connection, captures: Sequence[NewCapture]) -> list[int]:
    """Each capture's receipt serial, in order: each (facility, fiscal year) counter is
    advanced once by the batch's count (its row stays locked until the transaction ends, so
    numbers are never given twice or skipped)."""
    wanted = Counter((c.facility_code, c.fiscal_year) for c in captures)
    keys = sorted(wanted)  # one lock order for every writer: no deadlock between replicas
    counters = await conn.fetch(
        """INSERT INTO receipt_counters (facility_code, fiscal_year, last_number)
           SELECT * FROM unnest($1::text[], $2::int[], $3::int[])
           ON CONFLICT (facility_code, fiscal_year)
           DO UPDATE SET last_number = receipt_counters.last_number + EXCLUDED.last_number
           RETURNING facility_code, fiscal_year, last_number""",
        [f for f, _ in keys],
        [y for _, y in keys],
        [wanted[k] for k in keys],
    )
    serial = {
        (r["facility_code"], r["fiscal_year"]): r["last_number"]
        - wanted[(r["facility_code"], r["fiscal_year"])]
        for r in counters
    }
    serials: list[int] = []
    for c in captures:
        serial[(c.facility_code, c.fiscal_year)] += 1
        serials.append(serial[(c.facility_code, c.fiscal_year)])
    return serials


async def _append_payments(
    conn: asyncpg.Connection,
    captures: Sequence[NewCapture],
    numbers: Sequence[str],
    serials: Sequence[int],
) -> None:
    """The payments' rows, one statement for all of them."""
    await db.append_rows(
        conn,
        "payments",
        _PAYMENT_COLUMNS,
        (
            (
                c.payment_id,
                c.facility_code,
                c.terminal_id,
                c.channel,
                c.method.value,
                c.brand,
                c.amount_yen,
                c.item,
                c.occurred_at,
                number,
                c.application_id,
                c.card_token,
                c.card_last4,
                c.fiscal_year,
                serial_number,
            )
            for c, number, serial_number in zip(captures, numbers, serials, strict=True)
        ),
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
        channel=PaymentChannel(row["channel"]),
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


async def refund_exists(conn: asyncpg.Connection, refund_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)


async def mark_voided(conn: asyncpg.Connection, payment_id: uuid.UUID) -> None:
    await conn.execute("UPDATE payments SET voided = true WHERE payment_id = $1", payment_id)


async def print_receipt(conn: asyncpg.Connection, receipt_number: str) -> asyncpg.Record | None:
    """Count one more print of a receipt; the row with ``prints`` before this one."""
    return await conn.fetchrow(
        """WITH printed AS (
               UPDATE payments SET receipt_prints = receipt_prints + 1 WHERE receipt_number = $1
               RETURNING payment_id, receipt_prints - 1 AS earlier_prints)
           SELECT p.*, f.name_ja AS facility_name, printed.earlier_prints
           FROM printed JOIN payments p USING (payment_id)
           JOIN facilities f ON f.code = p.facility_code""",
        receipt_number,
    )


async def find_payments(
    conn: asyncpg.Connection | asyncpg.Pool,
    facility_code: str | None,
    date_from: date,
    date_to: date,
    method: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Payments by facility, business day (Asia/Tokyo) and method, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT p.* FROM payments p
           WHERE ($1::text IS NULL OR p.facility_code = $1)
             AND (p.occurred_at AT TIME ZONE 'Asia/Tokyo')::date BETWEEN $2 AND $3
             AND ($4::text IS NULL OR p.method = $4)
           ORDER BY p.occurred_at, p.payment_id
           LIMIT $5""",
        facility_code,
        date_from,
        date_to,
        method,
        limit,
    )
    return rows
