"""The procedures table: the catalog (手続き) read by code, searched, upserted by the import,
and announced once, with each row's version (``xmin``) for the procedure cache."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from contracts.applications import ProcedureGroup
from services.applications.domain import Procedure
from services.applications.store import Conn

_PROC_COLUMNS = """code, name_ja, department, proc_group, fee_yen, yields_certificate, form_schema,
    online_since, planned_online_quarter, sample"""


def _procedure(row: asyncpg.Record) -> Procedure:
    return Procedure(
        code=row["code"],
        name_ja=row["name_ja"],
        department=row["department"],
        group=ProcedureGroup(row["proc_group"]),
        fee_yen=row["fee_yen"],
        yields_certificate=row["yields_certificate"],
        form_schema=json.loads(row["form_schema"]),
        online_since=row["online_since"],
        planned_online_quarter=row["planned_online_quarter"],
        sample=row["sample"],
    )


async def get_procedure(conn: Conn, code: str) -> Procedure | None:
    row = await conn.fetchrow(
        f"SELECT {_PROC_COLUMNS} FROM procedures WHERE code = $1",
        code,
    )
    return None if row is None else _procedure(row)


async def get_procedure_with_version(
    conn: asyncpg.Connection, code: str
) -> tuple[Procedure, str] | None:
    """The procedure and its row's version, share-locked until the transaction ends (so the
    version holds for an application inserted in it).

    The version is PostgreSQL's ``xmin``: every UPDATE of the row gives it a new one, whoever
    writes it (the import command runs in its own process)."""
    row = await conn.fetchrow(
        f"""SELECT {_PROC_COLUMNS}, xmin::text AS version FROM procedures WHERE code = $1
            FOR SHARE""",
        code,
    )
    return None if row is None else (_procedure(row), row["version"])


async def get_procedures(conn: Conn, codes: list[str]) -> dict[str, Procedure]:
    rows = await conn.fetch(
        f"SELECT {_PROC_COLUMNS} FROM procedures WHERE code = ANY($1::text[])",
        codes,
    )
    return {r["code"]: _procedure(r) for r in rows}


def search_text(p: Procedure) -> str:
    return f"{p.code} {p.name_ja} {p.department}".lower()


async def upsert_procedures(conn: asyncpg.Connection, procedures: list[Procedure]) -> None:
    await conn.executemany(
        """INSERT INTO procedures (code, name_ja, department, proc_group, fee_yen,
                                   yields_certificate, form_schema, online_since,
                                   planned_online_quarter, sample, search_text, announced_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, now())
           ON CONFLICT (code) DO UPDATE SET
               name_ja = EXCLUDED.name_ja, department = EXCLUDED.department,
               proc_group = EXCLUDED.proc_group, fee_yen = EXCLUDED.fee_yen,
               yields_certificate = EXCLUDED.yields_certificate,
               form_schema = EXCLUDED.form_schema, online_since = EXCLUDED.online_since,
               planned_online_quarter = EXCLUDED.planned_online_quarter,
               sample = EXCLUDED.sample, search_text = EXCLUDED.search_text,
               announced_at = now(), updated_at = now()""",
        [
            (
                p.code,
                p.name_ja,
                p.department,
                int(p.group),
                p.fee_yen,
                p.yields_certificate,
                json.dumps(p.form_schema, ensure_ascii=False, sort_keys=True),
                p.online_since,
                p.planned_online_quarter,
                p.sample,
                search_text(p),
            )
            for p in procedures
        ],
    )


async def take_unannounced_procedures(conn: asyncpg.Connection) -> list[Procedure]:
    """Procedures never announced (the migration's core), marked announced now: the caller
    writes their events in the same transaction."""
    rows = await conn.fetch(
        f"""UPDATE procedures SET announced_at = now() WHERE announced_at IS NULL
            RETURNING {_PROC_COLUMNS}"""
    )
    return sorted((_procedure(r) for r in rows), key=lambda p: p.code)


@dataclass(frozen=True)
class ProcedureQuery:
    """Catalog search: free text over code, name and department, plus exact filters."""

    text: str | None = None
    department: str | None = None
    group: ProcedureGroup | None = None
    online: bool | None = None
    sample: bool | None = None


async def search_procedures(
    conn: Conn, q: ProcedureQuery, *, limit: int, offset: int
) -> tuple[list[Procedure], int]:
    where = ["true"]
    args: list[Any] = []

    def cond(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if q.text:
        for word in q.text.lower().split():
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond("search_text LIKE ?", f"%{escaped}%")
    if q.department is not None:
        cond("department = ?", q.department)
    if q.group is not None:
        cond("proc_group = ?", int(q.group))
    if q.online is not None:
        where.append("online_since IS NOT NULL" if q.online else "online_since IS NULL")
    if q.sample is not None:
        cond("sample = ?", q.sample)
    rows = await conn.fetch(
        f"""SELECT {_PROC_COLUMNS}, count(*) OVER () AS total FROM procedures
            WHERE {" AND ".join(where)}
            ORDER BY code LIMIT {int(limit)} OFFSET {int(offset)}""",
        *args,
    )
    total = int(rows[0]["total"]) if rows else 0
    return [_procedure(r) for r in rows], total
