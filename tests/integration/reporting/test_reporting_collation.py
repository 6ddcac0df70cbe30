"""The read-models' text keys compare by their bytes (migration 0011): the KPI answers' order
does not depend on the database's locale, and tables joined on a key agree on its collation
(columns of two collations cannot be compared, so a new table left on the default would fail
only when a query joins it)."""

from __future__ import annotations

import asyncpg

from services.reporting.app import DEFINITION
from services.runtime import db
from services.runtime.service import migrations_for

KEYS = {"procedure_code", "department", "channel", "step", "facility_code", "method", "brand"}


async def test_every_text_key_of_the_read_models_is_collated_by_bytes(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> None:
    schema = f"{namespace}_reporting"
    pool = await _migrated(database_url, schema)
    try:
        rows = await pool.fetch(
            """SELECT c.table_name, c.column_name, c.collation_name
               FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.table_schema = $1 AND c.data_type = 'text'
                 AND t.table_type = 'BASE TABLE' AND c.column_name = ANY($2::text[])""",
            schema,
            sorted(KEYS),
        )
    finally:
        await pool.close()
    assert len({r["table_name"] for r in rows}) >= 15  # the read-models are there
    assert [
        (r["table_name"], r["column_name"], r["collation_name"])
        for r in rows
        if r["collation_name"] != "C"
    ] == []


async def _migrated(database_url: str, schema: str) -> asyncpg.Pool:
    pool = await db.create_pool(database_url, schema, min_size=1, max_size=1)
    await db.migrate(pool, schema, migrations_for(DEFINITION))
    return pool
