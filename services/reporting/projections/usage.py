"""Online usage (件数ベース): each new submission kept as a fact and counted by month,
procedure and channel at every roll-up level.

Writes ``application_facts``, ``applications_monthly``, ``applications_month_procedure``,
``applications_procedure_totals``, ``applications_by_procedure``, ``applications_by_month``.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.reporting.projections.rows import Submission

TOKYO_MONTH = "date_trunc('month', ({}) AT TIME ZONE 'Asia/Tokyo')::date"
"""A time's month in Asia/Tokyo, computed by PostgreSQL as domain.tokyo_month does (Japan has
had no daylight saving time since 1951)."""


async def record_submissions(
    conn: asyncpg.Connection, submissions: Sequence[Submission]
) -> list[asyncpg.Record]:
    """Count the batch's new submissions (the first copy of each application id); returns
    them (application id, procedure, month, time) for the turnaround tables."""
    if not submissions:
        return []
    new_facts: list[asyncpg.Record] = await conn.fetch(
        _SUBMISSIONS,
        [r.application_id for r in submissions],
        [r.procedure_code for r in submissions],
        [r.channel for r in submissions],
        [r.submitted_at for r in submissions],
    )
    return new_facts


_SUBMISSIONS = f"""
WITH sub AS (
    SELECT DISTINCT ON (t.id) t.id, t.code, t.channel, t.at
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
         WITH ORDINALITY AS t(id, code, channel, at, n)
    ORDER BY t.id, t.n),
new_facts AS (
    INSERT INTO application_facts (application_id, procedure_code, channel, submitted_at, month)
    SELECT id, code, channel, at, {TOKYO_MONTH.format("at")} FROM sub
    ON CONFLICT (application_id) DO NOTHING
    RETURNING application_id, procedure_code, channel, submitted_at, month),
usage AS (
    INSERT INTO applications_monthly (month, procedure_code, channel, count)
    SELECT month, procedure_code, channel, count(*) FROM new_facts
    GROUP BY month, procedure_code, channel
    ON CONFLICT (month, procedure_code, channel)
    DO UPDATE SET count = applications_monthly.count + EXCLUDED.count),
usage_wide AS (
    INSERT INTO applications_month_procedure AS u (month, procedure_code, online, counter, mail)
    SELECT month, procedure_code, count(*) FILTER (WHERE channel = 'online'),
           count(*) FILTER (WHERE channel = 'counter'), count(*) FILTER (WHERE channel = 'mail')
    FROM new_facts GROUP BY month, procedure_code
    ON CONFLICT (month, procedure_code) DO UPDATE SET online = u.online + EXCLUDED.online,
        counter = u.counter + EXCLUDED.counter, mail = u.mail + EXCLUDED.mail),
usage_procedure_totals AS (
    INSERT INTO applications_procedure_totals AS u (procedure_code, online, counter, mail)
    SELECT procedure_code, count(*) FILTER (WHERE channel = 'online'),
           count(*) FILTER (WHERE channel = 'counter'), count(*) FILTER (WHERE channel = 'mail')
    FROM new_facts GROUP BY procedure_code
    ON CONFLICT (procedure_code) DO UPDATE SET online = u.online + EXCLUDED.online,
        counter = u.counter + EXCLUDED.counter, mail = u.mail + EXCLUDED.mail),
usage_by_procedure AS (
    INSERT INTO applications_by_procedure AS u (procedure_code, channel, count)
    SELECT procedure_code, channel, count(*) FROM new_facts GROUP BY procedure_code, channel
    ON CONFLICT (procedure_code, channel) DO UPDATE SET count = u.count + EXCLUDED.count),
usage_by_month AS (
    INSERT INTO applications_by_month AS u (month, channel, count)
    SELECT month, channel, count(*) FROM new_facts GROUP BY month, channel
    ON CONFLICT (month, channel) DO UPDATE SET count = u.count + EXCLUDED.count)
SELECT application_id, procedure_code, month, submitted_at FROM new_facts
"""
