"""The identity_challenges table: challenges issued to applicants, taken (row-locked) and
marked used by the signed submission that carries one, and the sweep of expired ones."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.applications.identity import Challenge
from services.applications.store import Conn


async def insert_challenge(conn: Conn, challenge: Challenge) -> None:
    await conn.execute(
        """INSERT INTO identity_challenges (challenge, applicant_id, issued_at, expires_at)
           VALUES ($1, $2, $3, $4)""",
        challenge.value,
        challenge.applicant_id,
        challenge.issued_at,
        challenge.expires_at,
    )


async def take_challenge(conn: asyncpg.Connection, value: str) -> Challenge | None:
    """The challenge ``value``, row-locked until the transaction ends: a second submission
    carrying it waits here, then finds it used (or free again, if the first rolled back)."""
    row = await conn.fetchrow(
        """SELECT challenge, applicant_id, issued_at, expires_at, used_at
           FROM identity_challenges WHERE challenge = $1 FOR UPDATE""",
        value,
    )
    if row is None:
        return None
    return Challenge(
        value=row["challenge"],
        applicant_id=row["applicant_id"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
    )


async def use_challenge(
    conn: asyncpg.Connection, value: str, application_id: uuid.UUID, now: datetime
) -> None:
    """Mark the challenge taken by ``take_challenge`` used by ``application_id``."""
    result: str = await conn.execute(
        """UPDATE identity_challenges SET used_at = $3, application_id = $2
           WHERE challenge = $1 AND used_at IS NULL""",
        value,
        application_id,
        now,
    )
    if result != "UPDATE 1":  # the caller holds the row lock and saw it unused
        raise RuntimeError(f"challenge not marked used ({result})")


async def forget_expired_challenges(conn: Conn, expired_before: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM identity_challenges WHERE expires_at < $1", expired_before
    )
    return int(result.split()[-1])
