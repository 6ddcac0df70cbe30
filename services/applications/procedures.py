"""The procedures (手続き) applications are submitted to, kept in memory between requests.

A submission needs its procedure (group, fee, form) and the form's compiled JSON Schema
validator. Reading the row and compiling the schema for every request is a round trip to
PostgreSQL and some CPU that the answer rarely repays: the catalog changes a few times a
year. So each running service keeps the procedures it has used, each with its row's
version (PostgreSQL's ``xmin``: every UPDATE of the row gives it a new one, whoever makes
it; ``cityhall catalog import`` runs in a process of its own).

The cache is never trusted on its own word: the application is inserted only if the
procedure's row still has the cached version, checked in the INSERT statement itself
(``store.applications.insert_submission(..., procedure_version, ...)``). When it has changed,
the entry is read again (share-locked for the rest of the transaction) and the submission is
decided again against the new row. A changed procedure therefore applies from the next
submission on, exactly as without a cache; there is no time-to-live to wait out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import asyncpg

from services.applications.domain import Procedure
from services.applications.forms import Form
from services.applications.store.procedures import get_procedure_with_version

MAX_ENTRIES = 512
"""Procedures kept per process (least recently used ones leave first). A compiled form takes
a few kilobytes; the catalog has about 4,300 procedures, most of them rarely used."""


@dataclass(frozen=True)
class CachedProcedure:
    procedure: Procedure
    version: str
    """``xmin`` of the row this was read from."""
    form: Form


class ProcedureCache:
    """The procedures this service has used lately; one per running service (``ctx.provide``)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, CachedProcedure] = OrderedDict()
        self._max_entries = max_entries

    async def get(
        self, conn: asyncpg.Connection, code: str, *, fresh: bool = False
    ) -> CachedProcedure | None:
        """The procedure ``code`` as last read, or read now (``fresh``, or not cached).

        Unknown codes are not kept: they are read again each time.
        """
        if not fresh and (hit := self._entries.get(code)) is not None:
            self._entries.move_to_end(code)
            return hit
        found = await get_procedure_with_version(conn, code)
        if found is None:
            self._entries.pop(code, None)
            return None
        procedure, version = found
        entry = CachedProcedure(procedure, version, Form(procedure.form_schema))
        self._entries[code] = entry
        self._entries.move_to_end(code)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return entry

    def peek(self, code: str) -> CachedProcedure | None:
        """The procedure ``code`` as last read, without touching the database (None: not
        cached; ``get`` reads it)."""
        hit = self._entries.get(code)
        if hit is not None:
            self._entries.move_to_end(code)
        return hit

    def __len__(self) -> int:
        return len(self._entries)
