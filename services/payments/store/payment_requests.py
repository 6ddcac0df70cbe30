"""Online payment requests for application fees, the payment sweep's schedule of questions,
and the provider's notices (each id taken once, with its outcome)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.payments.domain import PaymentRequestState


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
    applicant_id: uuid.UUID | None,
    next_check_at: datetime,
    trace_headers: dict[str, str] | None = None,
) -> bool:
    """A new payment request, first asked about at ``next_check_at`` by the payment sweep;
    False when the application already has one. ``trace_headers``: the W3C context of the
    fee request, which the provider's notice continues (``trace_headers_of``)."""
    inserted = await conn.fetchval(
        """INSERT INTO payment_requests (request_id, application_id, reference, facility_code,
                                         fee_item, amount_yen, requested_at, expires_at,
                                         applicant_id, next_check_at, trace_headers)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
           ON CONFLICT (application_id) DO NOTHING RETURNING true""",
        request_id,
        application_id,
        reference,
        facility_code,
        fee_item,
        amount_yen,
        requested_at,
        expires_at,
        applicant_id,
        next_check_at,
        json.dumps(trace_headers or {}),
    )
    return bool(inserted)


async def trace_headers_of(pool: asyncpg.Pool, reference: str) -> dict[str, str]:
    """The trace context stored with a payment request (empty when none, or no request)."""
    text = await pool.fetchval(
        "SELECT trace_headers::text FROM payment_requests WHERE reference = $1", reference
    )
    headers = json.loads(text) if text else {}
    return {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}


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


async def lock_payment_request_by_id(
    conn: asyncpg.Connection, request_id: uuid.UUID
) -> PaymentRequestState | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_requests WHERE request_id = $1 FOR UPDATE", request_id
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


async def expire_due_requests(
    conn: asyncpg.Connection, now: datetime, limit: int = 500
) -> list[PaymentRequestState]:
    rows = await conn.fetch(
        """UPDATE payment_requests
           SET status = 'expired', closed_at = $1, next_check_at = least(next_check_at, $1)
           WHERE request_id IN (
               SELECT request_id FROM payment_requests
               WHERE status = 'pending' AND expires_at <= $1
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING *""",
        now,
        limit,
    )
    return [_request(r) for r in rows]


@dataclass(frozen=True)
class RequestToCheck:
    request_id: uuid.UUID
    reference: str
    checks: int
    """Questions asked before this one."""


async def requests_to_check(
    conn: asyncpg.Connection, now: datetime, horizon_s: float, limit: int
) -> list[RequestToCheck]:
    """Open requests (pending, or expired less than ``horizon_s`` ago) due a question to the
    provider, locked (another replica's sweep skips them)."""
    rows = await conn.fetch(
        """SELECT request_id, reference, checks FROM payment_requests
           WHERE status <> 'paid' AND next_check_at <= $1
             AND expires_at > $1 - make_interval(secs => $2)
           ORDER BY next_check_at LIMIT $3
           FOR UPDATE SKIP LOCKED""",
        now,
        horizon_s,
        limit,
    )
    return [RequestToCheck(r["request_id"], r["reference"], int(r["checks"])) for r in rows]


async def schedule_checks(
    conn: asyncpg.Connection, request_ids: Sequence[uuid.UUID], next_at: Sequence[datetime]
) -> None:
    await conn.execute(
        """UPDATE payment_requests r SET checks = r.checks + 1, next_check_at = n.next_at
           FROM unnest($1::uuid[], $2::timestamptz[]) AS n(request_id, next_at)
           WHERE r.request_id = n.request_id""",
        list(request_ids),
        list(next_at),
    )


async def claim_provider_notice(
    conn: asyncpg.Connection, event_id: str, reference: str, amount_yen: int, learnt_by: str
) -> asyncpg.Record | None:
    """Take a provider notice id; None when it is new, else the row kept when it was first
    accepted (its reference, amount and outcome). A concurrent copy waits here until the first
    commits (or rolls back, and then takes the id itself)."""
    inserted = await conn.fetchval(
        """INSERT INTO provider_events (event_id, reference, amount_yen, learnt_by)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (event_id) DO NOTHING RETURNING true""",
        event_id,
        reference,
        amount_yen,
        learnt_by,
    )
    if inserted:
        return None
    return await conn.fetchrow("SELECT * FROM provider_events WHERE event_id = $1", event_id)


async def record_notice_outcome(
    conn: asyncpg.Connection, event_id: str, payment_id: uuid.UUID, outcome: str
) -> None:
    await conn.execute(
        "UPDATE provider_events SET payment_id = $2, outcome = $3 WHERE event_id = $1",
        event_id,
        payment_id,
        outcome,
    )
