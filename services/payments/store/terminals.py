"""The registry's rows: the facilities (reference data), the terminals registered at them and
the NATS keys each was issued and revoked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.facilities import FACILITIES


async def sync_facilities(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Load the reference list of facilities (contracts.facilities) into the schema."""
    await conn.executemany(
        """INSERT INTO facilities (code, name_ja, kind, paid_for) VALUES ($1, $2, $3, $4)
           ON CONFLICT (code) DO UPDATE
           SET name_ja = EXCLUDED.name_ja, kind = EXCLUDED.kind, paid_for = EXCLUDED.paid_for""",
        [(f.code, f.name_ja, f.kind.value, f.paid_for.value) for f in FACILITIES],
    )


@dataclass(frozen=True)
class TerminalRow:
    terminal_id: str
    facility_code: str
    kind: str
    nats_user: str
    registered_at: datetime


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


@dataclass(frozen=True)
class TerminalKey:
    """A terminal's NATS public key in force (端末の鍵)."""

    terminal_id: str
    facility_code: str
    public_key: str


async def issue_terminal_key(
    conn: asyncpg.Connection, terminal_id: str, public_key: str, issued_by: str
) -> None:
    await conn.execute(
        "INSERT INTO terminal_keys (public_key, terminal_id, issued_by) VALUES ($1, $2, $3)",
        public_key,
        terminal_id,
        issued_by,
    )


async def revoke_terminal_key(
    conn: asyncpg.Connection, terminal_id: str, revoked_by: str, reason: str
) -> str | None:
    """Revoke the terminal's key in force; its public key, or None if it had none."""
    revoked: str | None = await conn.fetchval(
        """UPDATE terminal_keys SET revoked_at = now(), revoked_by = $2, reason = $3
           WHERE terminal_id = $1 AND revoked_at IS NULL RETURNING public_key""",
        terminal_id,
        revoked_by,
        reason,
    )
    return revoked


async def terminal_keys_in_force(conn: asyncpg.Connection | asyncpg.Pool) -> list[TerminalKey]:
    rows = await conn.fetch(
        """SELECT k.terminal_id, t.facility_code, k.public_key
           FROM terminal_keys k JOIN terminals t USING (terminal_id)
           WHERE k.revoked_at IS NULL ORDER BY k.terminal_id"""
    )
    return [TerminalKey(**dict(r)) for r in rows]


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


async def facilities_of_terminals(
    conn: asyncpg.Connection | asyncpg.Pool, terminal_ids: Sequence[str]
) -> dict[str, str]:
    """Registered terminals among ``terminal_ids`` and the facility each belongs to."""
    rows = await conn.fetch(
        "SELECT terminal_id, facility_code FROM terminals WHERE terminal_id = ANY($1::text[])",
        list(terminal_ids),
    )
    return {r["terminal_id"]: r["facility_code"] for r in rows}
