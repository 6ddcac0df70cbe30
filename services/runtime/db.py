"""PostgreSQL: a connection pool bound to the service's own schema, and plain-SQL migrations.

Each service owns one schema (``applications``, ``payments``, ...). The pool sets
``search_path`` to that schema only, so unqualified SQL in a service's store can only touch its
own tables. Migrations are ``NNNN_name.sql`` files applied in order, each in its own transaction,
recorded in ``schema_migrations`` with a checksum; a changed, already-applied file is an error,
not a silent drift.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


async def create_pool(
    dsn: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    app_name: str = "cityhall",
    server_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool whose connections see only ``schema`` (and pg_catalog); ``server_settings``
    adds PostgreSQL settings for its sessions."""
    await ensure_schema(dsn, schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={
            **(server_settings or {}),
            "search_path": schema,
            "application_name": app_name,
        },
    )
    assert pool is not None
    return pool


async def append_rows(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Append ``rows`` (each in ``columns`` order) to ``table`` of the connection's schema with
    binary COPY, inside the caller's transaction. For plain appends of many rows (no ``ON
    CONFLICT``, nothing returned): triggers and constraints apply as to an INSERT (statement
    triggers fire once, with their transition tables), and a violation raises the same error.
    Cheaper than ``INSERT ... SELECT FROM unnest($1::t[], ...)`` on both sides: asyncpg checks
    every element of an array parameter before encoding it, and the server writes COPY's rows
    without unnesting arrays (docs/benchmarks.md)."""
    await conn.copy_records_to_table(table, records=rows, columns=list(columns))


_MIGRATOR_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1))"
"""One migrator at a time per schema, even with many processes of a service starting at once:
``CREATE ... IF NOT EXISTS`` is not safe against a concurrent one (both pass the check, the
second fails on the catalog's unique index)."""


async def ensure_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(_MIGRATOR_LOCK, schema)
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await conn.close()


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def load_migrations(component: str, package: str) -> list[Migration]:
    """The ``NNNN_*.sql`` files of ``package``'s ``migrations`` folder, in order."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(component, int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{package}: two migrations share a version number")
    return found


async def migrate(pool: asyncpg.Pool, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is not applied yet; return the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(_MIGRATOR_LOCK, schema)
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       component text NOT NULL,
                       version integer NOT NULL,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (component, version))"""
            )
        for m in migrations:
            async with conn.transaction():
                await conn.execute(_MIGRATOR_LOCK, schema)
                row = await conn.fetchrow(
                    "SELECT checksum FROM schema_migrations WHERE component = $1 AND version = $2",
                    m.component,
                    m.version,
                )
                if row is not None:
                    if row["checksum"] != m.checksum:
                        raise MigrationError(
                            f"{schema}: migration {m.component}/{m.name} was changed after it was "
                            "applied; add a new migration instead"
                        )
                    continue
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (component, version, name, checksum) "
                    "VALUES ($1, $2, $3, $4)",
                    m.component,
                    m.version,
                    m.name,
                    m.checksum,
                )
                applied_now.append(f"{m.component}/{m.name}")
                log.info("migration applied", extra={"schema": schema, "migration": m.name})
    return applied_now


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying later (connection lost, deadlock, serialization)."""
    if isinstance(
        exc,
        asyncpg.exceptions.SerializationError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.TooManyConnectionsError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.LockNotAvailableError
        | asyncpg.exceptions.QueryCanceledError,
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith(("08", "53", "57P", "40"))
    return isinstance(exc, OSError | TimeoutError | ConnectionError)
