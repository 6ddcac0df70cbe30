"""Projections: one function per event type, applied inside the consumer's inbox transaction.

Each function is idempotent on the thing the event is about (an application id, a payment id),
on top of the inbox's dedupe by event id, so a producer that re-announces the same fact under a
new event id does not count twice.
"""

from __future__ import annotations

import asyncpg

from contracts.applications import ApplicationSubmittedV1
from contracts.envelope import Envelope
from contracts.payments import PaymentCapturedV1
from services.reporting import domain


async def record_application_submitted(
    conn: asyncpg.Connection, event: Envelope[ApplicationSubmittedV1]
) -> None:
    """Online usage rate: one more application of its channel, procedure and Tokyo month."""
    d = event.data
    month = domain.tokyo_month(d.submitted_at)
    new = await conn.fetchval(
        """INSERT INTO application_facts (application_id, procedure_code, channel,
                                          submitted_at, month)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (application_id) DO NOTHING
           RETURNING true""",
        d.application_id,
        d.procedure_code,
        d.channel.value,
        d.submitted_at,
        month,
    )
    if not new:
        return
    await conn.execute(
        """INSERT INTO applications_monthly (month, procedure_code, channel, count)
           VALUES ($1, $2, $3, 1)
           ON CONFLICT (month, procedure_code, channel)
           DO UPDATE SET count = applications_monthly.count + 1""",
        month,
        d.procedure_code,
        d.channel.value,
    )


async def record_payment_captured(
    conn: asyncpg.Connection, event: Envelope[PaymentCapturedV1]
) -> None:
    """Cashless share and revenue: one more payment of its method and brand, on its Tokyo day
    at its facility."""
    d = event.data
    day = domain.tokyo_day(d.occurred_at)
    brand = d.brand or ""
    new = await conn.fetchval(
        """INSERT INTO payment_captures (payment_id, facility_code, method, brand, amount_yen,
                                         captured_at, day)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (payment_id) DO NOTHING
           RETURNING true""",
        d.payment_id,
        d.facility_code,
        d.method.value,
        brand,
        d.amount_yen,
        d.occurred_at,
        day,
    )
    if not new:
        return
    await _change_bucket(
        conn, day, d.facility_code, d.method.value, brand, domain.BucketChange(1, d.amount_yen)
    )


async def _change_bucket(
    conn: asyncpg.Connection,
    day: object,
    facility_code: str,
    method: str,
    brand: str,
    change: domain.BucketChange,
) -> None:
    await conn.execute(
        """INSERT INTO payments_daily (day, facility_code, method, brand, count, amount_yen)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (day, facility_code, method, brand) DO UPDATE
           SET count = payments_daily.count + EXCLUDED.count,
               amount_yen = payments_daily.amount_yen + EXCLUDED.amount_yen""",
        day,
        facility_code,
        method,
        brand,
        change.count,
        change.amount_yen,
    )
