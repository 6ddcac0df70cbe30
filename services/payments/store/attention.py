"""The staff queue's rows (要確認入金): online payments that settle nothing by themselves, the
actions staff took on each (one per Idempotency-Key) and the decision."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from contracts.payments import (
    AttentionReason,
)
from services.payments.domain import AttentionState


async def insert_attention(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    request_id: uuid.UUID,
    reasons: Sequence[AttentionReason],
    requested_yen: int,
    received_at: datetime,
    learnt_by: str,
) -> None:
    await conn.execute(
        """INSERT INTO payment_attention (payment_id, request_id, reasons, requested_yen,
                                          received_at, learnt_by)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        payment_id,
        request_id,
        [r.value for r in reasons],
        requested_yen,
        received_at,
        learnt_by,
    )


async def lock_attention(conn: asyncpg.Connection, payment_id: uuid.UUID) -> AttentionState | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_attention WHERE payment_id = $1 FOR UPDATE", payment_id
    )
    if row is None:
        return None
    return AttentionState(
        payment_id=row["payment_id"],
        request_id=row["request_id"],
        reasons=tuple(AttentionReason(r) for r in row["reasons"]),
        decided=row["status"] == "decided",
    )


async def attention_action(
    conn: asyncpg.Connection, payment_id: uuid.UUID, idempotency_key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM payment_attention_actions WHERE payment_id = $1 AND idempotency_key = $2",
        payment_id,
        idempotency_key,
    )


async def insert_attention_action(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    idempotency_key: str,
    action: str,
    staff_id: str,
    acted_at: datetime,
    amount_yen: int | None = None,
    refund_id: uuid.UUID | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO payment_attention_actions (payment_id, idempotency_key, action,
                                                  amount_yen, refund_id, staff_id, acted_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        payment_id,
        idempotency_key,
        action,
        amount_yen,
        refund_id,
        staff_id,
        acted_at,
    )


async def decide_attention(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    resolution: str,
    staff_id: str,
    decided_at: datetime,
) -> None:
    await conn.execute(
        """UPDATE payment_attention
           SET status = 'decided', resolution = $2, decided_by = $3, decided_at = $4
           WHERE payment_id = $1""",
        payment_id,
        resolution,
        staff_id,
        decided_at,
    )


_ATTENTION = """
    SELECT a.*, p.amount_yen, p.refunded_yen, p.occurred_at AS paid_at, p.receipt_number,
           p.method, p.brand, p.facility_code, r.reference, r.application_id, r.expires_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'action', x.action, 'amount_yen', x.amount_yen, 'staff_id', x.staff_id,
                        'acted_at', x.acted_at) ORDER BY x.acted_at)
                     FROM payment_attention_actions x WHERE x.payment_id = a.payment_id),
                    '[]'::jsonb)::text AS actions
    FROM payment_attention a
    JOIN payments p USING (payment_id)
    JOIN payment_requests r USING (request_id)"""


async def attention_items(
    conn: asyncpg.Connection | asyncpg.Pool, status: str | None, limit: int
) -> list[asyncpg.Record]:
    """The staff queue, oldest first: open items, decided ones, or both (``status`` None)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _ATTENTION
        + """ WHERE ($1::text IS NULL OR a.status = $1)
              ORDER BY a.received_at, a.payment_id LIMIT $2""",
        status,
        limit,
    )
    return rows


async def attention_item(
    conn: asyncpg.Connection | asyncpg.Pool, payment_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(_ATTENTION + " WHERE a.payment_id = $1", payment_id)
