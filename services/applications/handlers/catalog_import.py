"""Importing the procedure catalog (``cityhall catalog import``): upsert the procedures in
chunks, each with the events announcing what changed, then announce the ones never announced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from contracts.applications import ProcedureRegisteredV1, ProcedureUpdatedV1
from contracts.envelope import Envelope, Event
from services.applications import catalog
from services.applications.domain import Procedure
from services.applications.store.procedures import (
    get_procedures,
    take_unannounced_procedures,
    upsert_procedures,
)
from services.runtime.outbox import add_events


@dataclass
class ImportReport:
    """What an import did: counts by outcome (rejected rows are counted by the reader)."""

    registered: int = 0
    updated: int = 0
    onlined: int = 0
    unchanged: int = 0
    announced: int = 0
    """Procedures already in the catalog but never announced (the core of migration 0002)."""


async def import_procedures(
    pool: asyncpg.Pool,
    procedures: list[Procedure],
    *,
    chunk_size: int = 500,
    progress: Callable[[int], None] = lambda _n: None,
) -> ImportReport:
    """Upsert procedures and announce each change, one transaction per chunk of rows."""
    report = ImportReport()
    for start in range(0, len(procedures), chunk_size):
        chunk = procedures[start : start + chunk_size]
        now = datetime.now(UTC)
        async with pool.acquire() as conn, conn.transaction():
            before = await get_procedures(conn, [p.code for p in chunk])
            changed: list[Procedure] = []
            events: list[Event] = []
            for p in chunk:
                found = catalog.changes(before.get(p.code), p, now)
                if not found:
                    report.unchanged += 1
                    continue
                changed.append(p)
                events.extend(found)
                for e in found:
                    if isinstance(e, ProcedureRegisteredV1):
                        report.registered += 1
                    elif isinstance(e, ProcedureUpdatedV1):
                        report.updated += 1
                    else:
                        report.onlined += 1
            await upsert_procedures(conn, changed)
            await add_events(conn, [Envelope.new(e, time=now) for e in events])
        progress(len(chunk))
    async with pool.acquire() as conn, conn.transaction():
        now = datetime.now(UTC)
        unannounced = await take_unannounced_procedures(conn)
        events = [e for p in unannounced for e in catalog.changes(None, p, now)]
        await add_events(conn, [Envelope.new(e, time=now) for e in events])
        report.announced = len(unannounced)
    return report
