"""asyncpg queries for the delivery log operators act on (the notifications schema only):
failed and pending deliveries, page by page, and the resends operators asked for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from contracts.notifications import NotificationChannel, RecipientKind
from services.notifications.domain import NotificationStatus
from services.notifications.store import Conn


@dataclass(frozen=True)
class DeliveryFilter:
    statuses: tuple[NotificationStatus, ...]
    rules: tuple[str, ...] | None = None
    """Only these rules (a kind is resolved to its rules); None: any."""
    channel: NotificationChannel | None = None
    since: datetime | None = None
    """Only those changed (tried, given up, resent) at or after this."""


@dataclass(frozen=True)
class Delivery:
    """A notification as the delivery log shows it (the address in full: mask it to show it)."""

    id: uuid.UUID
    cause_event_id: str
    rule: str
    recipient_key: str
    recipient_kind: RecipientKind
    channel: NotificationChannel
    address: str
    status: NotificationStatus
    attempts: int
    last_error: str | None
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    resends: int


_COLUMNS = """n.id, n.cause_event_id, n.rule, n.recipient_key, n.recipient_kind, n.channel,
    n.address, n.status, n.attempts, n.last_error, n.first_attempt_at, n.last_attempt_at,
    n.next_attempt_at, n.created_at, n.updated_at, n.finished_at,
    (SELECT count(*) FROM notification_resends r WHERE r.notification_id = n.id) AS resends"""


def _delivery(r: asyncpg.Record) -> Delivery:
    values: dict[str, Any] = dict(r.items())
    values["status"] = NotificationStatus(r["status"])
    values["channel"] = NotificationChannel(r["channel"])
    values["recipient_kind"] = RecipientKind(r["recipient_kind"])
    return Delivery(**values)


def _where(f: DeliveryFilter) -> tuple[str, list[Any]]:
    args: list[Any] = [[s.value for s in f.statuses]]
    clauses = ["n.status = ANY($1::text[])"]
    if f.rules is not None:
        args.append(list(f.rules))
        clauses.append(f"n.rule = ANY(${len(args)}::text[])")
    if f.channel is not None:
        args.append(f.channel.value)
        clauses.append(f"n.channel = ${len(args)}")
    if f.since is not None:
        args.append(f.since)
        clauses.append(f"n.updated_at >= ${len(args)}")
    return " AND ".join(clauses), args


async def list_deliveries(
    conn: Conn, f: DeliveryFilter, *, order: str, limit: int, offset: int
) -> tuple[list[Delivery], int]:
    """One page of the deliveries ``f`` selects, and how many it selects in all.

    ``order``: ``newest`` (last change first: failed ones) or ``due`` (next attempt first)."""
    where, args = _where(f)
    order_by = "n.updated_at DESC, n.id" if order == "newest" else "n.next_attempt_at, n.id"
    n_args = len(args)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM notifications n WHERE {where}
            ORDER BY {order_by} LIMIT ${n_args + 1} OFFSET ${n_args + 2}""",
        *args,
        limit,
        offset,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM notifications n WHERE {where}", *args)
    return [_delivery(r) for r in rows], int(total)


async def get_delivery(
    conn: Conn, notification_id: uuid.UUID, *, lock: bool = False
) -> Delivery | None:
    """One notification; ``lock`` holds it (FOR UPDATE) until the transaction ends."""
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM notifications n WHERE n.id = $1"
        + (" FOR UPDATE OF n" if lock else ""),
        notification_id,
    )
    return None if r is None else _delivery(r)


# -- resends ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resend:
    """An operator's resend: who asked, when, where it went, and the delivery that failed."""

    id: uuid.UUID
    notification_id: uuid.UUID
    requested_by: str
    requested_at: datetime
    address: str
    previous_address: str
    previous_error: str | None
    previous_attempts: int


async def requeue(conn: Conn, notification_id: uuid.UUID, address: str) -> bool:
    """A dead notification back to the sender, to ``address``, with a fresh set of retries
    (its id, hence its Message-ID, stays). False unless it was dead."""
    result = await conn.execute(
        """UPDATE notifications
           SET status = 'pending', address = $2, attempts = 0, next_attempt_at = now(),
               last_error = NULL, provider_message_id = NULL, first_attempt_at = NULL,
               last_attempt_at = NULL, finished_at = NULL, updated_at = now()
           WHERE id = $1 AND status = 'dead'""",
        notification_id,
        address,
    )
    return bool(result.endswith(" 1"))


async def record_resend(conn: Conn, r: Resend) -> None:
    await conn.execute(
        """INSERT INTO notification_resends (id, notification_id, requested_by, requested_at,
                address, previous_address, previous_error, previous_attempts)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        r.id,
        r.notification_id,
        r.requested_by,
        r.requested_at,
        r.address,
        r.previous_address,
        r.previous_error,
        r.previous_attempts,
    )


async def resends_of(conn: Conn, notification_id: uuid.UUID) -> list[Resend]:
    """Every resend of a notification, newest first."""
    rows = await conn.fetch(
        """SELECT id, notification_id, requested_by, requested_at, address, previous_address,
                  previous_error, previous_attempts
           FROM notification_resends WHERE notification_id = $1
           ORDER BY requested_at DESC, id""",
        notification_id,
    )
    return [Resend(**dict(r.items())) for r in rows]
