"""The ledger's rows: postings and their entries (the database checks that each balances)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.payments.ledger import Entry, Posting, PostingKind
from services.runtime import db


async def insert_posting(conn: asyncpg.Connection, posting: Posting) -> None:
    await insert_postings(conn, [posting])


async def insert_postings(conn: asyncpg.Connection, postings: Sequence[Posting]) -> None:
    """Postings and their entries, one statement each: the ledger's trigger checks at the end
    of the entries' statement that every posting it touched balances."""
    await db.append_rows(
        conn,
        "postings",
        ("posting_id", "facility_code", "kind", "payment_id", "reverses", "business_date", "memo"),
        (
            (p.posting_id, p.facility_code, p.kind.value, p.payment_id, p.reverses,
             p.business_date, p.memo)
            for p in postings
        ),
    )  # fmt: skip
    await db.append_rows(
        conn,
        "ledger_entries",
        ("posting_id", "account", "debit_yen", "credit_yen"),
        ((p.posting_id, e.account, e.debit_yen, e.credit_yen) for p in postings for e in p.entries),
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
