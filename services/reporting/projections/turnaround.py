"""Certificate turnaround (交付までの時間) and completion: the steps after submission kept as
facts (whether or not their submission is here yet), and for every application a batch touches,
how its outcome changed, at every roll-up level (0006); once it has both a submission and a
certificate, its time in the histograms, and the median and p90 kept again for those keys
(0012).

Writes ``application_steps``, ``turnaround_monthly``, ``turnaround_by_procedure``,
``turnaround_by_month``, ``turnaround_histogram``, ``turnaround_procedure_histogram``,
``turnaround_month_histogram`` (and their kept percentiles).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.reporting.projections.rows import Step


async def record_outcomes(
    conn: asyncpg.Connection, new_facts: Sequence[asyncpg.Record], steps: Sequence[Step]
) -> None:
    """Count the outcomes of the batch's new submissions (``usage.record_submissions``'
    rows: they were written just now, in this transaction) and new steps."""
    if not new_facts and not steps:
        return
    timed = await conn.fetch(
        _OUTCOMES,
        [r["application_id"] for r in new_facts],
        [r["procedure_code"] for r in new_facts],
        [r["month"] for r in new_facts],
        [r["submitted_at"] for r in new_facts],
        [r.application_id for r in steps],
        [r.step for r in steps],
        [r.occurred_at for r in steps],
    )
    if timed:
        await conn.execute(
            _PERCENTILES, [r["month"] for r in timed], [r["procedure_code"] for r in timed]
        )


_ADD_OUTCOMES = """submitted = t.submitted + EXCLUDED.submitted,
        completed = t.completed + EXCLUDED.completed, closed = t.closed + EXCLUDED.closed,
        certificates_issued = t.certificates_issued + EXCLUDED.certificates_issued"""
_ADD_TIMES = "count = h.count + EXCLUDED.count, seconds = h.seconds + EXCLUDED.seconds"

# The new facts are already in application_facts (this transaction), hence left out of the
# facts of new steps. Sibling CTEs see the tables as they were before the statement, so
# `steps_before` is each application's steps before this batch. It returns the (month,
# procedure) keys that got new times.
_OUTCOMES = f"""
WITH new_facts AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::date[], $4::timestamptz[])
                  AS t(application_id, procedure_code, month, submitted_at)),
st AS (
    SELECT DISTINCT ON (t.id, t.step) t.id, t.step, t.at
    FROM unnest($5::uuid[], $6::text[], $7::timestamptz[]) WITH ORDINALITY AS t(id, step, at, n)
    ORDER BY t.id, t.step, t.n),
new_steps AS (
    INSERT INTO application_steps (application_id, step, occurred_at)
    SELECT id, step, at FROM st
    ON CONFLICT (application_id, step) DO NOTHING
    RETURNING application_id, step, occurred_at),
facts AS (
    SELECT application_id, procedure_code, month, submitted_at, true AS is_new FROM new_facts
    UNION ALL
    SELECT f.application_id, f.procedure_code, f.month, f.submitted_at, false
    FROM application_facts f
    WHERE f.application_id IN (SELECT application_id FROM new_steps)
      AND f.application_id NOT IN (SELECT application_id FROM new_facts)),
steps_before AS (
    SELECT s.application_id, s.step, s.occurred_at FROM application_steps s
    WHERE s.application_id IN (SELECT application_id FROM facts)),
steps_after AS (
    SELECT * FROM steps_before
    UNION ALL
    SELECT * FROM new_steps WHERE application_id IN (SELECT application_id FROM facts)),
before AS (
    SELECT application_id,
           bool_or(step = 'certificate_issued') AS issued,
           bool_or(step IN ('certificate_issued', 'approved')) AS completed,
           bool_or(step IN ('rejected', 'withdrawn')) AS closed
    FROM steps_before GROUP BY application_id),
after AS (
    SELECT application_id,
           min(occurred_at) FILTER (WHERE step = 'certificate_issued') AS issued_at,
           bool_or(step IN ('certificate_issued', 'approved')) AS completed,
           bool_or(step IN ('rejected', 'withdrawn')) AS closed
    FROM steps_after GROUP BY application_id),
change AS (
    SELECT f.month, f.procedure_code,
           f.is_new::int AS submitted,
           coalesce(a.completed, false)::int
             - (NOT f.is_new AND coalesce(b.completed, false))::int AS completed,
           coalesce(a.closed AND NOT a.completed, false)::int
             - (NOT f.is_new AND coalesce(b.closed AND NOT b.completed, false))::int AS closed,
           CASE WHEN a.issued_at IS NOT NULL AND (f.is_new OR NOT coalesce(b.issued, false))
                THEN extract(epoch FROM a.issued_at - f.submitted_at) END AS seconds
    FROM facts f
    LEFT JOIN before b USING (application_id)
    LEFT JOIN after a USING (application_id)),
monthly AS (
    INSERT INTO turnaround_monthly AS t
        (month, procedure_code, submitted, completed, closed, certificates_issued)
    SELECT month, procedure_code, sum(submitted), sum(completed), sum(closed), count(seconds)
    FROM change GROUP BY month, procedure_code
    ON CONFLICT (month, procedure_code) DO UPDATE SET {_ADD_OUTCOMES}),
by_procedure AS (
    INSERT INTO turnaround_by_procedure AS t
        (procedure_code, submitted, completed, closed, certificates_issued)
    SELECT procedure_code, sum(submitted), sum(completed), sum(closed), count(seconds)
    FROM change GROUP BY procedure_code
    ON CONFLICT (procedure_code) DO UPDATE SET {_ADD_OUTCOMES}),
by_month AS (
    INSERT INTO turnaround_by_month AS t
        (month, submitted, completed, closed, certificates_issued)
    SELECT month, sum(submitted), sum(completed), sum(closed), count(seconds)
    FROM change GROUP BY month
    ON CONFLICT (month) DO UPDATE SET {_ADD_OUTCOMES}),
times AS (
    SELECT month, procedure_code, turnaround_bin(seconds) AS bin, seconds
    FROM change WHERE seconds IS NOT NULL),
histogram AS (
    INSERT INTO turnaround_histogram AS h (month, procedure_code, bin, count, seconds)
    SELECT month, procedure_code, bin, count(*), sum(seconds) FROM times
    GROUP BY month, procedure_code, bin
    ON CONFLICT (month, procedure_code, bin) DO UPDATE SET {_ADD_TIMES}),
procedure_histogram AS (
    INSERT INTO turnaround_procedure_histogram AS h (procedure_code, bin, count, seconds)
    SELECT procedure_code, bin, count(*), sum(seconds) FROM times GROUP BY procedure_code, bin
    ON CONFLICT (procedure_code, bin) DO UPDATE SET {_ADD_TIMES}),
month_histogram AS (
    INSERT INTO turnaround_month_histogram AS h (month, bin, count, seconds)
    SELECT month, bin, count(*), sum(seconds) FROM times GROUP BY month, bin
    ON CONFLICT (month, bin) DO UPDATE SET {_ADD_TIMES})
SELECT DISTINCT month, procedure_code FROM times
"""
# The keys whose times changed get their kept median and p90 again (0012), in a statement of
# their own: it must see the histograms as the statement above left them.
_PERCENTILES = "SELECT turnaround_refresh_percentiles($1::date[], $2::text[])"
