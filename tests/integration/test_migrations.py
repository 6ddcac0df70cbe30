"""Plain-SQL migrations: applied once, in order, and a changed file is refused."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from services.registry import definition
from services.runtime import db as rdb
from services.runtime.service import migrations_for


async def test_migrations_apply_once_and_are_recorded(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> None:
    schema = f"{namespace}_applications"
    migrations = migrations_for(definition("applications"))
    pool = await rdb.create_pool(database_url, schema)
    try:
        first = await rdb.migrate(pool, schema, migrations)
        again = await rdb.migrate(pool, schema, migrations)
        assert first == [f"{m.component}/{m.name}" for m in migrations]
        assert again == []
        tables = {
            r["tablename"]
            for r in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        }
        assert {"outbox", "inbox", "applications", "schema_migrations"} <= tables
    finally:
        await pool.close()


async def test_a_migration_changed_after_it_was_applied_is_refused(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> None:
    schema = f"{namespace}_reporting"
    migrations = migrations_for(definition("reporting"))
    pool = await rdb.create_pool(database_url, schema)
    try:
        await rdb.migrate(pool, schema, migrations)
        edited = [*migrations[:-1], dataclasses.replace(migrations[-1], sql="SELECT 2;")]
        with pytest.raises(rdb.MigrationError, match="was changed after it was applied"):
            await rdb.migrate(pool, schema, edited)
    finally:
        await pool.close()


async def test_a_service_pool_sees_only_its_own_schema(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> None:
    apps = await rdb.create_pool(database_url, f"{namespace}_applications")
    rep = await rdb.create_pool(database_url, f"{namespace}_reporting")
    try:
        await rdb.migrate(
            apps, f"{namespace}_applications", migrations_for(definition("applications"))
        )
        await rdb.migrate(rep, f"{namespace}_reporting", migrations_for(definition("reporting")))
        with pytest.raises(asyncpg.UndefinedTableError):
            await rep.fetch("SELECT * FROM applications")
    finally:
        await apps.close()
        await rep.close()


async def test_replicas_starting_at_once_migrate_a_new_schema_once(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> None:
    """Processes of one service starting together (replicas, or payments and its relay) each
    create the schema, its schema_migrations and the migrations: each is made by one of them
    while the others wait, then found done (before, two CREATE ... IF NOT EXISTS raced to a
    unique violation and the process exited)."""
    migrations = migrations_for(definition("payments"))
    for attempt in range(4):
        schema = f"{namespace}_payments{attempt}"
        pools = [await rdb.create_pool(database_url, schema) for _ in range(3)]
        try:
            applied = await asyncio.gather(*(rdb.migrate(p, schema, migrations) for p in pools))
        finally:
            for p in pools:
                await p.close()
        names = [name for a in applied for name in a]  # each applied by one of them, once
        assert sorted(names) == sorted(f"{m.component}/{m.name}" for m in migrations)
