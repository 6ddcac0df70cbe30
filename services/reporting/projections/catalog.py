"""Online procedure coverage (手続数ベース): the catalog as last announced.

Writes ``procedures``.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.reporting import domain
from services.reporting.projections.rows import Procedure


async def record_procedures(conn: asyncpg.Connection, procedures: Sequence[Procedure]) -> None:
    """Keep each procedure's newest facts; a fact older than what is stored changes nothing."""
    if not procedures:
        return
    await conn.execute(
        _PROCEDURES,
        [r.procedure_code for r in procedures],
        [r.name_ja for r in procedures],
        [r.department for r in procedures],
        [r.procedure_group for r in procedures],
        [r.online_since for r in procedures],
        [
            domain.fiscal_quarter_last_month(r.planned_quarter) if r.planned_quarter else None
            for r in procedures
        ],
        [r.planned_quarter for r in procedures],
        [r.sample for r in procedures],
        [r.as_of for r in procedures],
    )


# The catalog as last announced: per procedure, the newest facts of the batch (the later in
# the stream on a tie), written when not older than what is stored.
_PROCEDURES = """
INSERT INTO procedures AS p (procedure_code, name_ja, department, procedure_group, online_since,
                             planned_by_month, planned_quarter, sample, as_of)
SELECT DISTINCT ON (t.code) t.code, t.name, t.department, t.grp, t.online_since, t.planned_by,
       t.quarter, t.sample, t.as_of
FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::date[], $6::date[],
            $7::text[], $8::bool[], $9::timestamptz[])
     WITH ORDINALITY AS t(code, name, department, grp, online_since, planned_by, quarter, sample,
                          as_of, n)
ORDER BY t.code, t.as_of DESC, t.n DESC
ON CONFLICT (procedure_code) DO UPDATE SET
    name_ja = EXCLUDED.name_ja, department = EXCLUDED.department,
    procedure_group = EXCLUDED.procedure_group, online_since = EXCLUDED.online_since,
    planned_by_month = EXCLUDED.planned_by_month, planned_quarter = EXCLUDED.planned_quarter,
    sample = EXCLUDED.sample, as_of = EXCLUDED.as_of
WHERE p.as_of <= EXCLUDED.as_of
"""
