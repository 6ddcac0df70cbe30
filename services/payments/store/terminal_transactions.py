"""Terminal transaction keys: every capture, refund and void a terminal posts claims its
(terminal, transaction id) for ever; a repeat with other content is kept as a conflict."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.payments import (
    PaymentMethod,
    TerminalTransactionKind,
    TerminalTransactionVersion,
)


@dataclass(frozen=True)
class TerminalClaim:
    """A terminal transaction to record under its (terminal, transaction id) key."""

    terminal_id: str
    transaction_id: str
    kind: str
    payment_id: uuid.UUID
    amount_yen: int
    occurred_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.terminal_id, self.transaction_id)


async def claim_terminal_transactions(
    conn: asyncpg.Connection, claims: Sequence[TerminalClaim]
) -> set[tuple[str, str]]:
    """Record terminal transaction ids in one statement; the keys that were new (a key posted
    before, maybe long ago, or twice in ``claims``, is claimed once)."""
    rows = await conn.fetch(
        """INSERT INTO terminal_transactions
               (terminal_id, transaction_id, kind, payment_id, amount_yen, occurred_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[],
                                $6::timestamptz[])
           ON CONFLICT (terminal_id, transaction_id) DO NOTHING
           RETURNING terminal_id, transaction_id""",
        [c.terminal_id for c in claims],
        [c.transaction_id for c in claims],
        [c.kind for c in claims],
        [c.payment_id for c in claims],
        [c.amount_yen for c in claims],
        [c.occurred_at for c in claims],
    )
    return {(r["terminal_id"], r["transaction_id"]) for r in rows}


async def posted_versions(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], TerminalTransactionVersion]:
    """What the ledger holds under each (terminal, transaction id): a capture's own means and
    item, a refund's or void's amount, time and the capture it undoes."""
    rows = await conn.fetch(
        """SELECT t.terminal_id, t.transaction_id, t.kind, t.amount_yen, t.occurred_at,
                  p.method, p.brand, p.item,
                  (SELECT c.transaction_id FROM terminal_transactions c
                    WHERE c.payment_id = t.payment_id AND c.kind = 'capture' LIMIT 1) AS original
           FROM unnest($1::text[], $2::text[]) AS k(terminal_id, transaction_id)
           JOIN terminal_transactions t USING (terminal_id, transaction_id)
           JOIN payments p ON p.payment_id = t.payment_id""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    found = {}
    for r in rows:
        capture = r["kind"] == TerminalTransactionKind.CAPTURE.value
        found[(r["terminal_id"], r["transaction_id"])] = TerminalTransactionVersion(
            kind=TerminalTransactionKind(r["kind"]),
            method=PaymentMethod(r["method"]),
            brand=r["brand"],
            amount_yen=int(r["amount_yen"]),
            item=r["item"] if capture else None,
            occurred_at=r["occurred_at"],
            original_transaction_id=None if capture else r["original"],
        )
    return found


async def insert_terminal_conflict(
    conn: asyncpg.Connection,
    terminal_id: str,
    transaction_id: str,
    facility_code: str,
    posted: TerminalTransactionVersion,
    received: TerminalTransactionVersion,
    detected_at: datetime,
) -> bool:
    """Keep a conflicting repeat; False when this very repeat was kept before."""
    received_json = received.model_dump_json()
    inserted = await conn.fetchval(
        """INSERT INTO terminal_conflicts (terminal_id, transaction_id, received_key,
                                           facility_code, posted, received, detected_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)
           ON CONFLICT DO NOTHING RETURNING true""",
        terminal_id,
        transaction_id,
        received_json,
        facility_code,
        posted.model_dump_json(),
        received_json,
        detected_at,
    )
    return bool(inserted)
