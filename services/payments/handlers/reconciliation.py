"""Daily reconciliation (調定): a settlement batch (posted by staff or by a terminal) compared
with the ledger, the fee and remittance posted, the outcome announced; once per batch id."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from contracts.envelope import Envelope, Event
from contracts.facilities import FACILITIES_BY_CODE
from contracts.payments import (
    SettlementBatch,
    SettlementDifference,
    SettlementMismatchV1,
    SettlementReconciledV1,
    TerminalSettlementV1,
)
from services.payments import errors, ledger
from services.payments.handlers import envelope
from services.payments.store import postings, settlements, terminals
from services.runtime.outbox import add_events


@dataclass(frozen=True)
class SettlementOutcome:
    batch_id: str
    reconciled: bool
    differences: list[SettlementDifference]
    reported_yen: int
    fee_yen: int
    replayed: bool = False
    """True when this batch id had been received before (the first outcome is returned)."""


async def reconcile_settlement(pool: asyncpg.Pool, batch: SettlementBatch) -> SettlementOutcome:
    """Compare a day's settlement batch with the ledger; post the fee and the remittance;
    announce SettlementReconciled or SettlementMismatch. Once per batch id."""
    async with pool.acquire() as conn, conn.transaction():
        return await reconcile_settlement_on(conn, batch)


async def record_terminal_settlement(
    conn: asyncpg.Connection, event: Envelope[TerminalSettlementV1]
) -> None:
    """A terminal's own settlement batch: only for the facility it is registered to."""
    settlement = event.data
    terminal = await terminals.get_terminal(conn, settlement.terminal_id)
    if terminal is None:
        raise errors.UnknownTerminal(f"terminal {settlement.terminal_id!r} is not registered")
    if terminal.facility_code != settlement.batch.facility_code:
        raise errors.TerminalNotAtFacility(
            f"terminal {settlement.terminal_id!r} is registered to {terminal.facility_code!r}, "
            f"not {settlement.batch.facility_code!r}"
        )
    await reconcile_settlement_on(conn, settlement.batch)


async def reconcile_settlement_on(
    conn: asyncpg.Connection, batch: SettlementBatch
) -> SettlementOutcome:
    """``reconcile_settlement`` inside the caller's transaction."""
    if batch.facility_code not in FACILITIES_BY_CODE:
        raise errors.UnknownFacility(f"no facility has the code {batch.facility_code!r}")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"settlement/{batch.batch_id}")
    earlier = await settlements.settlement(conn, batch.batch_id)
    if earlier is not None:
        return SettlementOutcome(
            batch_id=batch.batch_id,
            reconciled=earlier["status"] == "reconciled",
            differences=[
                SettlementDifference.model_validate(d) for d in json.loads(earlier["differences"])
            ],
            reported_yen=int(earlier["reported_yen"]),
            fee_yen=int(earlier["fee_yen"]),
            replayed=True,
        )
    accounts = [ledger.receivable_account(line.method, line.brand) for line in batch.lines]
    book = await settlements.ledger_day(conn, batch.facility_code, batch.business_date, accounts)
    differences = ledger.reconcile(batch.lines, book)
    posting = ledger.settlement_posting(batch.facility_code, batch.business_date, batch.lines)
    if posting is not None:
        await postings.insert_posting(conn, posting)
    await settlements.insert_settlement(
        conn, batch, differences, posting.posting_id if posting else None
    )
    reported = sum(line.amount_yen for line in batch.lines)
    fee = sum(line.fee_yen for line in batch.lines)
    event: Event
    if differences:
        event = SettlementMismatchV1(
            batch_id=batch.batch_id,
            facility_code=batch.facility_code,
            business_date=batch.business_date,
            differences=differences,
        )
    else:
        event = SettlementReconciledV1(
            batch_id=batch.batch_id,
            facility_code=batch.facility_code,
            business_date=batch.business_date,
            gross_yen=reported,
            fee_yen=fee,
            net_yen=reported - fee,
        )
    await add_events(conn, [envelope(event)])
    return SettlementOutcome(
        batch_id=batch.batch_id,
        reconciled=not differences,
        differences=differences,
        reported_yen=reported,
        fee_yen=fee,
    )
