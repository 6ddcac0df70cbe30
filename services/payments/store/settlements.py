"""Daily reconciliation (調定) and revenue: the ledger's day per account, the settlement batches
received and their outcome, and revenue per facility and day."""

from __future__ import annotations

import json
import uuid
from datetime import date

import asyncpg

from contracts.payments import (
    SettlementBatch,
    SettlementDifference,
)
from services.payments.ledger import PROCESSOR_FEE, REVENUE, LedgerDay


async def ledger_day(
    conn: asyncpg.Connection, facility_code: str, day: date, accounts: list[str]
) -> dict[str, LedgerDay]:
    """Per receivable account: captures (net of voids) and the net amount of that day."""
    rows = await conn.fetch(
        """SELECT e.account,
                  count(*) FILTER (WHERE p.kind = 'capture')
                    - count(*) FILTER (WHERE p.kind = 'void') AS count,
                  sum(e.debit_yen - e.credit_yen) AS amount
           FROM ledger_entries e JOIN postings p USING (posting_id)
           WHERE p.facility_code = $1 AND p.business_date = $2 AND e.account = ANY($3)
             AND p.kind IN ('capture', 'refund', 'void')
           GROUP BY e.account""",
        facility_code,
        day,
        accounts,
    )
    return {r["account"]: LedgerDay(int(r["count"]), int(r["amount"])) for r in rows}


async def insert_settlement(
    conn: asyncpg.Connection,
    batch: SettlementBatch,
    differences: list[SettlementDifference],
    posting_id: uuid.UUID | None,
) -> bool:
    """Record a batch and its outcome; False when this batch id was received before."""
    inserted = await conn.fetchval(
        """INSERT INTO settlements (batch_id, facility_code, business_date, processor, status,
                                    reported_yen, fee_yen, differences, posting_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
           ON CONFLICT (batch_id) DO NOTHING RETURNING true""",
        batch.batch_id,
        batch.facility_code,
        batch.business_date,
        batch.processor,
        "mismatch" if differences else "reconciled",
        sum(line.amount_yen for line in batch.lines),
        sum(line.fee_yen for line in batch.lines),
        json.dumps([d.model_dump(mode="json") for d in differences]),
        posting_id,
    )
    if not inserted:
        return False
    await conn.executemany(
        """INSERT INTO settlement_lines (batch_id, method, brand, count, amount_yen, fee_yen)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            (
                batch.batch_id,
                line.method.value,
                line.brand,
                line.count,
                line.amount_yen,
                line.fee_yen,
            )
            for line in batch.lines
        ],
    )
    return True


async def settlement(
    conn: asyncpg.Connection | asyncpg.Pool, batch_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM settlements WHERE batch_id = $1", batch_id)


async def settlements(
    conn: asyncpg.Connection | asyncpg.Pool,
    facility_code: str | None,
    date_from: date,
    date_to: date,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM settlements
           WHERE ($1::text IS NULL OR facility_code = $1)
             AND business_date BETWEEN $2 AND $3
           ORDER BY business_date, facility_code, batch_id""",
        facility_code,
        date_from,
        date_to,
    )
    return rows


async def revenue_by_day(
    conn: asyncpg.Connection | asyncpg.Pool,
    facility_code: str | None,
    date_from: date,
    date_to: date,
) -> list[asyncpg.Record]:
    """Gross revenue, processor fee and net per facility and day, with reconciliation status."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH days AS (
               SELECT p.facility_code, p.business_date,
                      coalesce(sum(e.credit_yen - e.debit_yen)
                               FILTER (WHERE e.account = $4), 0) AS gross_yen,
                      coalesce(sum(e.debit_yen - e.credit_yen)
                               FILTER (WHERE e.account = $5), 0) AS fee_yen
               FROM postings p JOIN ledger_entries e USING (posting_id)
               WHERE ($1::text IS NULL OR p.facility_code = $1)
                 AND p.business_date BETWEEN $2 AND $3
               GROUP BY p.facility_code, p.business_date)
           SELECT d.*, d.gross_yen - d.fee_yen AS net_yen,
                  CASE WHEN s.any_mismatch THEN 'mismatch'
                       WHEN s.batches > 0 THEN 'reconciled'
                       ELSE 'unreconciled' END AS reconciliation
           FROM days d
           LEFT JOIN LATERAL (
               SELECT count(*) AS batches, bool_or(status = 'mismatch') AS any_mismatch
               FROM settlements s
               WHERE s.facility_code = d.facility_code AND s.business_date = d.business_date
           ) s ON true
           ORDER BY d.business_date, d.facility_code""",
        facility_code,
        date_from,
        date_to,
        REVENUE,
        PROCESSOR_FEE,
    )
    return rows
