"""The terminal registry: register a terminal at a facility, rotate and revoke its NATS key."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from contracts.facilities import FACILITIES_BY_CODE
from contracts.payments import (
    terminal_settlement_subject,
    terminal_subject,
)
from services.payments import errors
from services.payments.store import terminals


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
