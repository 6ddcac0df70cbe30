"""Projections: one function per event type, applied inside the consumer's inbox transaction.

Each function is idempotent on the thing the event is about (an application id, a payment id),
on top of the inbox's dedupe by event id, so a producer that re-announces the same fact under a
new event id does not count twice.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationStepV1,
    ApplicationSubmittedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureFactsV1,
)
from contracts.envelope import Envelope
from contracts.payments import (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    SettlementMismatchV1,
    SettlementReconciledV1,
)
from services.reporting import domain


async def record_application_submitted(
    conn: asyncpg.Connection, event: Envelope[ApplicationSubmittedV1]
) -> None:
    """Online usage rate: one more application of its channel, procedure and Tokyo month."""
    d = event.data
    month = domain.tokyo_month(d.submitted_at)
    # One round trip: the fact, and the count only when the fact is new.
    await conn.execute(
        """WITH new AS (
               INSERT INTO application_facts (application_id, procedure_code, channel,
                                              submitted_at, month)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (application_id) DO NOTHING
               RETURNING month, procedure_code, channel)
           INSERT INTO applications_monthly (month, procedure_code, channel, count)
           SELECT month, procedure_code, channel, 1 FROM new
           ON CONFLICT (month, procedure_code, channel)
           DO UPDATE SET count = applications_monthly.count + 1""",
        d.application_id,
        d.procedure_code,
        d.channel.value,
        d.submitted_at,
        month,
    )


async def record_payment_captured(
    conn: asyncpg.Connection, event: Envelope[PaymentCapturedV1]
) -> None:
    """Cashless share and revenue: one more payment of its method and brand, on its Tokyo day
    at its facility."""
    d = event.data
    day = domain.tokyo_day(d.occurred_at)
    brand = d.brand or ""
    # One round trip: the capture, its bucket when it is new, and the refunds or void that
    # arrived before it (they wait in payment_reversals).
    waiting = await conn.fetch(
        """WITH new AS (
               INSERT INTO payment_captures (payment_id, facility_code, method, brand,
                                             amount_yen, captured_at, day)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (payment_id) DO NOTHING
               RETURNING day, facility_code, method, brand, amount_yen),
           bucket AS (
               INSERT INTO payments_daily (day, facility_code, method, brand, count, amount_yen)
               SELECT day, facility_code, method, brand, 1, amount_yen FROM new
               ON CONFLICT (day, facility_code, method, brand) DO UPDATE
               SET count = payments_daily.count + 1,
                   amount_yen = payments_daily.amount_yen + EXCLUDED.amount_yen)
           SELECT r.reversal_id FROM payment_reversals r, new
           WHERE r.payment_id = $1 AND NOT r.applied
           ORDER BY r.occurred_at, r.reversal_id""",
        d.payment_id,
        d.facility_code,
        d.method.value,
        brand,
        d.amount_yen,
        d.occurred_at,
        day,
    )
    for row in waiting:
        await _apply_reversal(conn, row["reversal_id"])


async def record_payment_refunded(
    conn: asyncpg.Connection, event: Envelope[PaymentRefundedV1]
) -> None:
    """A refund (返金) takes its yen out of the capture's bucket, and the payment out of the
    count once refunded in full. Before its capture has arrived, it waits for it."""
    d = event.data
    await _record_reversal(conn, str(d.refund_id), d.payment_id, "refund", d.amount_yen, d)


async def record_payment_voided(conn: asyncpg.Connection, event: Envelope[PaymentVoidedV1]) -> None:
    """A void (取消) takes the whole capture out of its bucket, as if it never happened."""
    d = event.data
    await _record_reversal(conn, f"void:{d.payment_id}", d.payment_id, "void", d.amount_yen, d)


async def _record_reversal(
    conn: asyncpg.Connection,
    reversal_id: str,
    payment_id: object,
    kind: str,
    amount_yen: int,
    data: Any,
) -> None:
    new = await conn.fetchval(
        """INSERT INTO payment_reversals (reversal_id, payment_id, kind, amount_yen, occurred_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reversal_id) DO NOTHING RETURNING true""",
        reversal_id,
        payment_id,
        kind,
        amount_yen,
        data.occurred_at,
    )
    if new:
        await _apply_reversal(conn, reversal_id)


async def _apply_reversal(conn: asyncpg.Connection, reversal_id: str) -> None:
    """Apply a recorded reversal to its capture, if the capture is here; else leave it waiting."""
    row = await conn.fetchrow(
        """SELECT r.kind, r.amount_yen AS reversed_yen, c.*
           FROM payment_reversals r JOIN payment_captures c USING (payment_id)
           WHERE r.reversal_id = $1 AND NOT r.applied
           FOR UPDATE OF r, c""",
        reversal_id,
    )
    if row is None:
        return
    state = domain.CaptureState(row["amount_yen"], row["refunded_yen"], row["voided"])
    if row["kind"] == "void":
        after, change = domain.void(state)
    else:
        after, change = domain.refund(state, row["reversed_yen"])
    await conn.execute(
        "UPDATE payment_captures SET refunded_yen = $2, voided = $3 WHERE payment_id = $1",
        row["payment_id"],
        after.refunded_yen,
        after.voided,
    )
    await conn.execute(
        "UPDATE payment_reversals SET applied = true WHERE reversal_id = $1", reversal_id
    )
    # The capture made this bucket; an UPDATE (not an upsert) since the CHECKs on the
    # negative candidate row of an INSERT would fire before ON CONFLICT is considered.
    await conn.execute(
        """UPDATE payments_daily SET count = count + $5, amount_yen = amount_yen + $6
           WHERE day = $1 AND facility_code = $2 AND method = $3 AND brand = $4""",
        row["day"],
        row["facility_code"],
        row["method"],
        row["brand"],
        change.count,
        change.amount_yen,
    )


async def record_settlement_reconciled(
    conn: asyncpg.Connection, event: Envelope[SettlementReconciledV1]
) -> None:
    """Revenue: the day's batch matched the ledger; its processor fee and net remittance."""
    d = event.data
    await _record_settlement(
        conn, d.batch_id, d.facility_code, d.business_date, True, event, d.gross_yen, d.fee_yen
    )


async def record_settlement_mismatch(
    conn: asyncpg.Connection, event: Envelope[SettlementMismatchV1]
) -> None:
    """Revenue: the day's batch did not match the ledger (not reconciled)."""
    d = event.data
    await _record_settlement(conn, d.batch_id, d.facility_code, d.business_date, False, event)


async def _record_settlement(
    conn: asyncpg.Connection,
    batch_id: str,
    facility_code: str,
    business_date: object,
    reconciled: bool,
    event: Envelope[Any],
    gross_yen: int | None = None,
    fee_yen: int | None = None,
) -> None:
    net = None if gross_yen is None or fee_yen is None else gross_yen - fee_yen
    await conn.execute(
        """INSERT INTO settlements (batch_id, facility_code, business_date, reconciled,
                                    gross_yen, fee_yen, net_yen, as_of)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (batch_id) DO UPDATE SET
               reconciled = EXCLUDED.reconciled, gross_yen = EXCLUDED.gross_yen,
               fee_yen = EXCLUDED.fee_yen, net_yen = EXCLUDED.net_yen, as_of = EXCLUDED.as_of
           WHERE settlements.as_of <= EXCLUDED.as_of""",
        batch_id,
        facility_code,
        business_date,
        reconciled,
        gross_yen,
        fee_yen,
        net,
        event.time,
    )


async def _record_step(conn: asyncpg.Connection, step: str, data: ApplicationStepV1) -> None:
    await conn.execute(
        """INSERT INTO application_steps (application_id, step, occurred_at)
           VALUES ($1, $2, $3) ON CONFLICT (application_id, step) DO NOTHING""",
        data.application_id,
        step,
        data.occurred_at,
    )


async def record_certificate_issued(
    conn: asyncpg.Connection, event: Envelope[CertificateIssuedV1]
) -> None:
    """Certificate turnaround (交付までの時間) and completion: the certificate is issued."""
    await _record_step(conn, "certificate_issued", event.data)


async def record_application_approved(
    conn: asyncpg.Connection, event: Envelope[ApplicationApprovedV1]
) -> None:
    """Completion: the application was approved (承認)."""
    await _record_step(conn, "approved", event.data)


async def record_application_rejected(
    conn: asyncpg.Connection, event: Envelope[ApplicationRejectedV1]
) -> None:
    """Closed without completion: rejected (却下). The reason is not kept."""
    await _record_step(conn, "rejected", event.data)


async def record_application_withdrawn(
    conn: asyncpg.Connection, event: Envelope[ApplicationWithdrawnV1]
) -> None:
    """Closed without completion: withdrawn (取下げ)."""
    await _record_step(conn, "withdrawn", event.data)


async def record_procedure_facts(
    conn: asyncpg.Connection, event: Envelope[ProcedureFactsV1]
) -> None:
    """Online procedure coverage (手続数ベース): the catalog as last announced. Registered,
    updated and onlined all carry the whole facts; the newest (by ``occurred_at``) wins."""
    d = event.data
    quarter = d.planned_online_quarter
    await conn.execute(
        """INSERT INTO procedures (procedure_code, name_ja, department, procedure_group,
                                   online_since, planned_by_month, planned_quarter, sample, as_of)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (procedure_code) DO UPDATE SET
               name_ja = EXCLUDED.name_ja, department = EXCLUDED.department,
               procedure_group = EXCLUDED.procedure_group, online_since = EXCLUDED.online_since,
               planned_by_month = EXCLUDED.planned_by_month,
               planned_quarter = EXCLUDED.planned_quarter, sample = EXCLUDED.sample,
               as_of = EXCLUDED.as_of
           WHERE procedures.as_of <= EXCLUDED.as_of""",
        d.procedure_code,
        d.name_ja,
        d.department,
        int(d.group),
        d.online_since,
        domain.fiscal_quarter_last_month(quarter) if quarter else None,
        quarter,
        d.sample,
        d.occurred_at,
    )
