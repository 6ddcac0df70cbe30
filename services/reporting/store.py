"""asyncpg queries on the reporting schema only: the KPI read-models, summed for the API.

Filters are all optional; a ``None`` filter matches everything. Periods are half-open:
``since <= month < until`` with both bounds first days of a month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

READ_MODEL_TABLES: tuple[str, ...] = (
    "application_facts",
    "applications_monthly",
    "payment_captures",
    "payments_daily",
    "payment_reversals",
    "application_steps",
    "procedures",
    "settlements",
    "turnaround_monthly",
    "turnaround_histogram",
)
"""Every projection table, in the order a rebuild copies them (the inbox comes with them)."""


@dataclass(frozen=True)
class Period:
    since: date | None = None
    until: date | None = None


@dataclass(frozen=True)
class ApplicationFilter:
    procedure_code: str | None = None
    period: Period = Period()
    department: str | None = None
    group: int | None = None


@dataclass(frozen=True)
class PaymentFilter:
    facility_code: str | None = None
    method: str | None = None
    brand: str | None = None
    period: Period = Period()


ApplicationKey = Literal["procedure_code", "month", "department"]
_APPLICATION_KEYS: dict[str, str] = {
    "procedure_code": "m.procedure_code",
    "month": "m.month",
    "department": "p.department",
}
_APPLICATION_WHERE = """
    ($1::text IS NULL OR {code} = $1)
    AND ($2::date IS NULL OR {month} >= $2)
    AND ($3::date IS NULL OR {month} < $3)
    AND ($4::text IS NULL OR p.department = $4)
    AND ($5::smallint IS NULL OR p.procedure_group = $5)"""


def _application_args(f: ApplicationFilter) -> tuple[object, ...]:
    return (f.procedure_code, f.period.since, f.period.until, f.department, f.group)


async def applications_by(
    conn: Conn, keys: Sequence[ApplicationKey], f: ApplicationFilter
) -> list[asyncpg.Record]:
    """Applications by channel (online, counter, mail, total), grouped by ``keys``."""
    cols = [_APPLICATION_KEYS[k] for k in keys]
    select = "".join(f"{c}, " for c in cols)
    group = f"GROUP BY {', '.join(cols)} ORDER BY {', '.join(cols)}" if cols else ""
    where = _APPLICATION_WHERE.format(code="m.procedure_code", month="m.month")
    return list(
        await conn.fetch(
            f"""SELECT {select}
                   coalesce(sum(count) FILTER (WHERE channel = 'online'), 0)::bigint AS online,
                   coalesce(sum(count) FILTER (WHERE channel = 'counter'), 0)::bigint AS counter,
                   coalesce(sum(count) FILTER (WHERE channel = 'mail'), 0)::bigint AS mail,
                   coalesce(sum(count), 0)::bigint AS total
                FROM applications_monthly m
                LEFT JOIN procedures p USING (procedure_code)
                WHERE {where}
                {group}""",
            *_application_args(f),
        )
    )


TurnaroundKey = Literal["procedure_code", "month"]

# percentile_cont over a histogram: the value at 0-based rank r is the mean of the first bin
# whose running count exceeds r (bins are ordered, so their means are too); p interpolates
# between the values at ranks floor(p (n - 1)) and ceil(p (n - 1)).
_PERCENTILE = """(min(v) FILTER (WHERE upto > floor({p} * (n - 1)))
       + max({p} * (n - 1) - floor({p} * (n - 1)))
       * (min(v) FILTER (WHERE upto > ceil({p} * (n - 1)))
          - min(v) FILTER (WHERE upto > floor({p} * (n - 1)))))::float8"""


async def turnaround_by(
    conn: Conn, keys: Sequence[TurnaroundKey], f: ApplicationFilter
) -> list[asyncpg.Record]:
    """Applications submitted (by month of submission), how many were completed (certificate
    issued or approved), closed otherwise, and the submitted -> certificate issued times
    (median and 90th percentile, interpolated, in seconds), from the read-models the
    projection keeps (``turnaround_monthly``, ``turnaround_histogram``)."""
    names = ", ".join(keys)
    select = "".join(f"{k}, " for k in keys)
    group = f"GROUP BY {names}" if keys else ""
    partition = f"PARTITION BY {names}" if keys else ""
    join = f"LEFT JOIN pct USING ({names})" if keys else "LEFT JOIN pct ON true"
    order = f"ORDER BY {names}" if keys else ""
    where = _APPLICATION_WHERE.format(code="procedure_code", month="month")
    return list(
        await conn.fetch(
            f"""WITH counts AS (
                    SELECT {select}
                        coalesce(sum(submitted), 0)::bigint AS submitted,
                        coalesce(sum(completed), 0)::bigint AS completed,
                        coalesce(sum(closed), 0)::bigint AS closed,
                        coalesce(sum(certificates_issued), 0)::bigint AS certificates_issued
                    FROM turnaround_monthly LEFT JOIN procedures p USING (procedure_code)
                    WHERE {where}
                    {group}),
                bins AS (
                    SELECT {select} bin, sum(count) AS count, sum(seconds) / sum(count) AS v
                    FROM turnaround_histogram LEFT JOIN procedures p USING (procedure_code)
                    WHERE {where}
                    GROUP BY {select} bin),
                ranked AS (
                    SELECT {select} v,
                        sum(count) OVER ({partition} ORDER BY bin) AS upto,
                        sum(count) OVER ({partition}) AS n
                    FROM bins),
                pct AS (
                    SELECT {select}
                        {_PERCENTILE.format(p="0.5")} AS median_seconds,
                        {_PERCENTILE.format(p="0.9")} AS p90_seconds
                    FROM ranked {group})
                SELECT counts.*, pct.median_seconds, pct.p90_seconds
                FROM counts {join}
                {order}""",
            *_application_args(f),
        )
    )


@dataclass(frozen=True)
class CatalogFilter:
    department: str | None = None
    group: int | None = None


CoverageKey = Literal["department", "procedure_group"]


async def coverage_by(
    conn: Conn, keys: Sequence[CoverageKey], f: CatalogFilter
) -> list[asyncpg.Record]:
    """Procedures online now / all procedures in the catalog."""
    select = "".join(f"{k}, " for k in keys)
    group = f"GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}" if keys else ""
    return list(
        await conn.fetch(
            f"""SELECT {select}
                   count(*) FILTER (WHERE online_since IS NOT NULL)::bigint AS online,
                   count(*)::bigint AS procedures
                FROM procedures
                WHERE ($1::text IS NULL OR department = $1)
                  AND ($2::smallint IS NULL OR procedure_group = $2)
                {group}""",
            f.department,
            f.group,
        )
    )


async def coverage_series(
    conn: Conn, f: CatalogFilter, since: date | None, until: date
) -> list[asyncpg.Record]:
    """Month by month: procedures online by the end of the month (actual) and procedures
    planned to be online by then (the roadmap's quarter, or the actual date when the
    procedure went online without a plan). ``procedures`` is the catalog as it is now."""
    return list(
        await conn.fetch(
            """WITH cat AS (
                   SELECT online_since, coalesce(planned_by_month, online_since) AS planned
                   FROM procedures
                   WHERE ($1::text IS NULL OR department = $1)
                     AND ($2::smallint IS NULL OR procedure_group = $2)),
               bounds AS (
                   SELECT coalesce(
                              $3::date,
                              date_trunc('month', least(min(online_since), min(planned)))::date,
                              $4::date) AS first
                   FROM cat)
               SELECT m::date AS month,
                      (SELECT count(*) FROM cat
                        WHERE online_since < m + interval '1 month')::bigint AS online,
                      (SELECT count(*) FROM cat
                        WHERE planned < m + interval '1 month')::bigint AS planned,
                      (SELECT count(*) FROM cat)::bigint AS procedures
               FROM bounds, generate_series(bounds.first, $4::date, interval '1 month') AS m
               ORDER BY m""",
            f.department,
            f.group,
            since,
            until,
        )
    )


PaymentKey = Literal["facility_code", "method", "brand", "month", "day"]
_PAYMENT_KEYS: dict[str, str] = {
    "facility_code": "facility_code",
    "method": "method",
    "brand": "brand",
    "month": "date_trunc('month', day)::date AS month",
    "day": "day",
}


async def payments_by(
    conn: Conn, keys: Sequence[PaymentKey], f: PaymentFilter
) -> list[asyncpg.Record]:
    """Payments standing (count, yen) and their cashless part, grouped by ``keys``."""
    select = "".join(f"{_PAYMENT_KEYS[k]}, " for k in keys)
    names = ", ".join(keys)
    group = f"GROUP BY {names} ORDER BY {names}" if keys else ""
    return list(
        await conn.fetch(
            f"""SELECT {select}
                   coalesce(sum(count), 0)::bigint AS count,
                   coalesce(sum(amount_yen), 0)::bigint AS amount_yen,
                   coalesce(sum(count) FILTER (WHERE method <> 'cash'), 0)::bigint
                       AS cashless_count,
                   coalesce(sum(amount_yen) FILTER (WHERE method <> 'cash'), 0)::bigint
                       AS cashless_amount_yen
                FROM payments_daily
                WHERE ($1::text IS NULL OR facility_code = $1)
                  AND ($2::text IS NULL OR method = $2)
                  AND ($3::text IS NULL OR brand = $3)
                  AND ($4::date IS NULL OR day >= $4)
                  AND ($5::date IS NULL OR day < $5)
                {group}""",
            f.facility_code,
            f.method,
            f.brand,
            f.period.since,
            f.period.until,
        )
    )


async def settlements_by_day(
    conn: Conn, facility_code: str | None, period: Period
) -> list[asyncpg.Record]:
    """Per facility and day: the processor fees of reconciled batches, and whether every
    batch of the day reconciled."""
    return list(
        await conn.fetch(
            """SELECT facility_code, business_date AS day,
                      coalesce(sum(fee_yen) FILTER (WHERE reconciled), 0)::bigint AS fee_yen,
                      bool_and(reconciled) AS reconciled
               FROM settlements
               WHERE ($1::text IS NULL OR facility_code = $1)
                 AND ($2::date IS NULL OR business_date >= $2)
                 AND ($3::date IS NULL OR business_date < $3)
               GROUP BY facility_code, business_date""",
            facility_code,
            period.since,
            period.until,
        )
    )
