"""asyncpg queries on the reporting schema only: the KPI read-models, summed for the API.

Filters are all optional; a ``None`` filter matches everything. Periods are half-open:
``since <= month < until`` with both bounds first days of a month.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, TypeAlias

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
    "payments_monthly",
    "payments_day_totals",
    "payments_facility_days",
    "applications_by_procedure",
    "applications_by_month",
    "turnaround_by_procedure",
    "turnaround_by_month",
    "turnaround_procedure_histogram",
    "turnaround_month_histogram",
    "applications_month_procedure",
    "applications_procedure_totals",
)
"""Every projection table, in the order a rebuild copies them (the inbox comes with them)."""


async def projection_versions(conn: Conn, families: Sequence[str]) -> tuple[int, ...]:
    """The read-models' version of each family (bumped by every projection batch in its
    transaction, see ``projections.bump_version``), in the order asked."""
    rows = await conn.fetch("SELECT family, version FROM projection_versions")
    found = {r["family"]: r["version"] for r in rows}
    return tuple(found[f] for f in families)


async def period_version(
    conn: Conn, tables: Sequence[str], period: Period, whole_tables: Sequence[str]
) -> int:
    """One number that moves whenever a row of ``tables`` in a month of ``period``, or a row of
    ``whole_tables``, changes (migration 0013): the greatest of their versions, which all come
    from one sequence, so any change (a month's first rows included) makes a greater one; 0
    when none has a version yet. A table without months is versioned whole under the month
    0001-01 (written in the SQL: asyncpg sends ``date.min`` as ``-infinity``)."""
    found = await conn.fetchval(
        """SELECT max(version) FROM read_model_months
           WHERE (table_name = ANY ($1::text[]) AND month <> DATE '0001-01-01'
                  AND ($2::date IS NULL OR month >= $2) AND ($3::date IS NULL OR month < $3))
              OR (table_name = ANY ($4::text[]) AND month = DATE '0001-01-01')""",
        list(tables),
        period.since,
        period.until,
        list(whole_tables),
    )
    return int(found or 0)


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


@dataclass(frozen=True)
class _Level:
    """One roll-up level of a read-model: its table and what it can group and filter by."""

    table: str
    procedure: bool  # has procedure_code (so department and group too, from the catalog)
    month: bool
    wide: bool = False  # the channels as columns (online, counter, mail), not one row each


def _application_level(
    keys: Sequence[str],
    f: ApplicationFilter,
    finest: _Level,
    by_procedure: _Level,
    by_month: _Level,
) -> _Level:
    """The smallest level that has every key and filter: all time by procedure when no month
    is asked for, by month when no procedure is, else the finest."""
    months = "month" in keys or f.period.since is not None or f.period.until is not None
    procedures = (
        bool({"procedure_code", "department"} & set(keys))
        or f.procedure_code is not None
        or f.department is not None
        or f.group is not None
    )
    if not procedures:
        return by_month
    if not months:
        return by_procedure
    return finest


def _application_where(level: _Level, catalog: bool = True) -> tuple[str, str]:
    """FROM ... JOIN and WHERE for a level (filters a level cannot have are null: the chosen
    level has every filter that is set). ``catalog``: join the procedures (for a department or
    group)."""
    code = "m.procedure_code" if level.procedure else "NULL::text"
    month = "m.month" if level.month else "NULL::date"
    if level.procedure and catalog:
        source = f"{level.table} m LEFT JOIN procedures p USING (procedure_code)"
        dept, group = "p.department", "p.procedure_group"
    else:
        source, dept, group = f"{level.table} m", "NULL::text", "NULL::smallint"
    where = f"""
    ($1::text IS NULL OR {code} = $1)
    AND ($2::date IS NULL OR {month} >= $2)
    AND ($3::date IS NULL OR {month} < $3)
    AND ($4::text IS NULL OR {dept} = $4)
    AND ($5::smallint IS NULL OR {group} = $5)"""
    return source, where


def _needs_catalog(keys: Sequence[str], f: ApplicationFilter) -> bool:
    return "department" in keys or f.department is not None or f.group is not None


def _application_args(f: ApplicationFilter) -> tuple[object, ...]:
    return (f.procedure_code, f.period.since, f.period.until, f.department, f.group)


_USAGE = (
    _Level("applications_month_procedure", procedure=True, month=True, wide=True),
    _Level("applications_procedure_totals", procedure=True, month=False, wide=True),
    _Level("applications_by_month", procedure=False, month=True),
)


async def applications_by(
    conn: Conn, keys: Sequence[ApplicationKey], f: ApplicationFilter
) -> list[asyncpg.Record]:
    """Applications by channel, grouped by ``keys``: the keys' columns in order, then
    online, counter, mail and total."""
    names = {"procedure_code": "m.procedure_code", "month": "m.month", "department": "p.department"}
    cols = [names[k] for k in keys]
    select = "".join(f"{c}, " for c in cols)
    order = f"ORDER BY {', '.join(cols)}" if cols else ""
    level = _application_level(keys, f, *_USAGE)
    source, where = _application_where(level, _needs_catalog(keys, f))
    grain = {"procedure_code"} | ({"month"} if level.month else set())
    if level.wide and set(keys) == grain:
        # one row per key already (the catalog join is on its primary key): nothing to sum
        query = f"""SELECT {select} m.online, m.counter, m.mail,
                           m.online + m.counter + m.mail AS total
                    FROM {source} WHERE {where} {order}"""
    else:
        if level.wide:
            online, counter, mail = "sum(m.online)", "sum(m.counter)", "sum(m.mail)"
            total = "sum(m.online + m.counter + m.mail)"
        else:
            online, counter, mail = (
                f"sum(count) FILTER (WHERE channel = '{c}')" for c in ("online", "counter", "mail")
            )
            total = "sum(count)"
        group = f"GROUP BY {', '.join(cols)} {order}" if cols else ""
        query = f"""SELECT {select}
                       coalesce({online}, 0)::bigint AS online,
                       coalesce({counter}, 0)::bigint AS counter,
                       coalesce({mail}, 0)::bigint AS mail,
                       coalesce({total}, 0)::bigint AS total
                    FROM {source} WHERE {where} {group}"""
    return list(await conn.fetch(query, *_application_args(f)))


TurnaroundKey = Literal["procedure_code", "month"]

# percentile_cont over a histogram: the value at 0-based rank r is the mean of the first bin
# whose running count exceeds r (bins are ordered, so their means are too: the smallest mean
# of the bins from there on); p = num / den interpolates between the values at ranks
# floor(p (n - 1)) and ceil(p (n - 1)), in integers. Computed in Python over the bins of each
# group, read in bin order: the same float operations as the SQL window functions it
# replaced (``min(v) FILTER (WHERE upto > r)``, then ``lo + (x % den)::float8 / den *
# (hi - lo)``), without their window sorts; identical figures for every key and filter of the
# API on the benchmark's year (docs/reporting.md).


def _percentile(upto: Sequence[int], tail_min: Sequence[float], num: int, den: int) -> float:
    """The p = num / den percentile of a group's bins: ``upto`` the running counts, in bin
    order; ``tail_min[i]`` the smallest mean of bins i and after."""
    x = num * (upto[-1] - 1)
    lo = tail_min[bisect.bisect_right(upto, x // den)]  # first bin with upto > rank
    hi = tail_min[bisect.bisect_right(upto, (x + den - 1) // den)]
    return lo + (x % den) / den * (hi - lo)


def _median_p90(counts: Sequence[int], means: Sequence[float]) -> tuple[float, float]:
    """Median and 90th percentile of one group's bins (their counts and means, in bin
    order)."""
    upto = list(itertools.accumulate(counts))
    tail_min = list(itertools.accumulate(reversed(means), min))[::-1]  # running min from the end
    return _percentile(upto, tail_min, 1, 2), _percentile(upto, tail_min, 9, 10)


async def turnaround_by(
    conn: Conn, keys: Sequence[TurnaroundKey], f: ApplicationFilter
) -> list[asyncpg.Record | dict[str, Any]]:
    """Applications submitted (by month of submission), how many were completed (certificate
    issued or approved), closed otherwise, and the submitted -> certificate issued times
    (median and 90th percentile, interpolated, in seconds), from the read-models the
    projection keeps (``turnaround_monthly``, ``turnaround_histogram`` and their roll-ups):
    per group, the keys, then submitted, completed, closed, certificates_issued,
    median_seconds, p90_seconds. A group that is one row of a read-model reads the median and
    p90 kept with it; groups that sum rows interpolate over their summed bins (the same
    figures either way: migration 0012)."""
    select = "".join(f"m.{k}, " for k in keys)
    order = f"ORDER BY {', '.join(keys)}" if keys else ""
    counts = _application_level(keys, f, *_OUTCOMES)
    times = _application_level(keys, f, *_TIMES)
    catalog = _needs_catalog(keys, f)
    counts_source, where = _application_where(counts, catalog)
    times_source, _ = _application_where(times, catalog)
    grain = {"procedure_code"} if times.procedure else set()
    grain |= {"month"} if times.month else set()
    # One row per key (and bin) already: nothing to add up. A procedure asked for by name is
    # one value of its key: a procedure's months are one row (and bin) per month. Without
    # keys the answer is always one row (the sums), even for a procedure with none.
    fixed = {"procedure_code"} if f.procedure_code is not None else set()
    exact = bool(keys) and grain - fixed == set(keys) - fixed
    args = _application_args(f)
    if exact:  # the projection keeps each row's median and p90 (0012)
        rows = await conn.fetch(
            f"""SELECT {select} m.submitted, m.completed, m.closed, m.certificates_issued,
                       m.median_seconds, m.p90_seconds
                FROM {counts_source} WHERE {where} {order}""",
            *args,
        )
        return list(rows)  # read by name as they are (a dict each would cost more)
    return await _summed_turnaround(conn, keys, counts_source, times_source, where, args)


async def _summed_turnaround(
    conn: Conn,
    keys: Sequence[TurnaroundKey],
    counts_source: str,
    times_source: str,
    where: str,
    args: Sequence[Any],
) -> list[asyncpg.Record | dict[str, Any]]:
    """``turnaround_by`` for groups that sum rows: the counts summed, and the percentiles
    interpolated over the summed bins."""
    select = "".join(f"m.{k}, " for k in keys)
    group = f"GROUP BY {', '.join(f'm.{k}' for k in keys)}" if keys else ""
    order = f"ORDER BY {', '.join(keys)}" if keys else ""
    # The bins come as one row per group, in arrays (counts and means, in bin order): decoded
    # by asyncpg's C code instead of one Python record per bin.
    totals = f"""SELECT {select}
                     coalesce(sum(submitted), 0)::bigint AS submitted,
                     coalesce(sum(completed), 0)::bigint AS completed,
                     coalesce(sum(closed), 0)::bigint AS closed,
                     coalesce(sum(certificates_issued), 0)::bigint AS certificates_issued
                 FROM {counts_source} WHERE {where} {group} {order}"""
    names = "".join(f"{k}, " for k in keys)
    bins = f"""SELECT {names} array_agg(count ORDER BY bin) AS counts,
                      array_agg(v ORDER BY bin) AS means
               FROM (SELECT {select} m.bin, sum(m.count)::bigint AS count,
                            sum(m.seconds)::float8 / sum(m.count) AS v
                     FROM {times_source} WHERE {where}
                     GROUP BY {select} m.bin) AS b
               {"GROUP BY " + ", ".join(keys) if keys else ""}"""
    if isinstance(conn, asyncpg.Pool):
        count_rows, bin_rows = await asyncio.gather(
            conn.fetch(totals, *args), conn.fetch(bins, *args)
        )
    else:
        count_rows, bin_rows = await conn.fetch(totals, *args), await conn.fetch(bins, *args)
    width = len(keys)
    by_key = {tuple(r[:width]): r for r in bin_rows if r[width] is not None}  # none: no bins
    out: list[asyncpg.Record | dict[str, Any]] = []
    for r in count_rows:
        row = dict(r)
        found = by_key.get(tuple(r[:width]))
        row["median_seconds"], row["p90_seconds"] = (
            _median_p90(found[width], found[width + 1]) if found else (None, None)
        )
        out.append(row)
    return out


_OUTCOMES = (
    _Level("turnaround_monthly", procedure=True, month=True),
    _Level("turnaround_by_procedure", procedure=True, month=False),
    _Level("turnaround_by_month", procedure=False, month=True),
)
_TIMES = (
    _Level("turnaround_histogram", procedure=True, month=True),
    _Level("turnaround_procedure_histogram", procedure=True, month=False),
    _Level("turnaround_month_histogram", procedure=False, month=True),
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


PaymentKey = Literal["facility_code", "method", "brand", "month", "day"]


@dataclass(frozen=True)
class _PaymentLevel:
    table: str
    day: bool  # has day (else month)
    facility: bool
    method: bool  # has method and brand (else cashless_count and cashless_amount_yen)


_PAYMENTS = (
    _PaymentLevel("payments_monthly", day=False, facility=True, method=True),
    _PaymentLevel("payments_day_totals", day=True, facility=False, method=True),
    _PaymentLevel("payments_facility_days", day=True, facility=True, method=False),
    _PaymentLevel("payments_daily", day=True, facility=True, method=True),
)
"""From the smallest roll-up up: the first that has every key and filter is read."""


def _payment_level(keys: Sequence[str], f: PaymentFilter) -> _PaymentLevel:
    day = "day" in keys
    facility = "facility_code" in keys or f.facility_code is not None
    method = bool({"method", "brand"} & set(keys)) or f.method is not None or f.brand is not None
    return next(
        level
        for level in _PAYMENTS
        if (level.day or not day)
        and (level.facility or not facility)
        and (level.method or not method)
    )


async def payments_by(
    conn: Conn, keys: Sequence[PaymentKey], f: PaymentFilter
) -> list[asyncpg.Record]:
    """Payments standing (count, yen) and their cashless part, grouped by ``keys``."""
    level = _payment_level(keys, f)
    period = "day" if level.day else "month"
    month = "date_trunc('month', day)::date" if level.day else "month"
    exprs = {
        "facility_code": "facility_code",
        "method": "method",
        "brand": "brand",
        "month": f"{month} AS month",
        "day": "day",
    }
    if level.method:
        cashless_count = "sum(count) FILTER (WHERE method <> 'cash')"
        cashless_yen = "sum(amount_yen) FILTER (WHERE method <> 'cash')"
        method, brand = "method", "brand"
    else:
        cashless_count, cashless_yen = "sum(cashless_count)", "sum(cashless_amount_yen)"
        method, brand = "NULL::text", "NULL::text"
    facility = "facility_code" if level.facility else "NULL::text"
    select = "".join(f"{exprs[k]}, " for k in keys)
    names = ", ".join(keys)
    group = f"GROUP BY {names} ORDER BY {names}" if keys else ""
    return list(
        await conn.fetch(
            f"""SELECT {select}
                   coalesce(sum(count), 0)::bigint AS count,
                   coalesce(sum(amount_yen), 0)::bigint AS amount_yen,
                   coalesce({cashless_count}, 0)::bigint AS cashless_count,
                   coalesce({cashless_yen}, 0)::bigint AS cashless_amount_yen
                FROM {level.table}
                WHERE ($1::text IS NULL OR {facility} = $1)
                  AND ($2::text IS NULL OR {method} = $2)
                  AND ($3::text IS NULL OR {brand} = $3)
                  AND ($4::date IS NULL OR {period} >= $4)
                  AND ($5::date IS NULL OR {period} < $5)
                {group}""",
            f.facility_code,
            f.method,
            f.brand,
            f.period.since,
            f.period.until,
        )
    )


async def revenue_by_day(conn: Conn, f: PaymentFilter) -> list[asyncpg.Record]:
    """Per facility and day: payments standing (``payments_by``) beside the day's settlements
    (the processor fees of its reconciled batches, and whether every batch of the day
    reconciled; null when there is none), joined here rather than
    in Python: a year is 12,000 facility-days. Columns: facility_code, day, count,
    amount_yen, fee_yen, reconciled."""
    keys: list[PaymentKey] = ["facility_code", "day"]
    level = _payment_level(keys, f)
    facility = "facility_code" if level.facility else "NULL::text"
    method, brand = ("method", "brand") if level.method else ("NULL::text", "NULL::text")
    if level.method:  # by method and brand: summed to the facility and day
        paid = "sum(count)::bigint AS count, sum(amount_yen)::bigint AS amount_yen"
        group = "GROUP BY facility_code, day"
    else:  # payments_facility_days: one row per facility and day already
        paid, group = "count, amount_yen", ""
    return list(
        await conn.fetch(
            f"""WITH paid AS (
                    SELECT facility_code, day, {paid}
                    FROM {level.table}
                    WHERE ($1::text IS NULL OR {facility} = $1)
                      AND ($2::text IS NULL OR {method} = $2)
                      AND ($3::text IS NULL OR {brand} = $3)
                      AND ($4::date IS NULL OR day >= $4)
                      AND ($5::date IS NULL OR day < $5)
                    {group}),
                settled AS (
                    SELECT facility_code, business_date AS day,
                           coalesce(sum(fee_yen) FILTER (WHERE reconciled), 0)::bigint AS fee_yen,
                           bool_and(reconciled) AS reconciled
                    FROM settlements
                    WHERE ($1::text IS NULL OR facility_code = $1)
                      AND ($4::date IS NULL OR business_date >= $4)
                      AND ($5::date IS NULL OR business_date < $5)
                    GROUP BY facility_code, business_date)
                SELECT paid.facility_code, paid.day, paid.count, paid.amount_yen,
                       settled.fee_yen, settled.reconciled
                FROM paid LEFT JOIN settled USING (facility_code, day)
                ORDER BY facility_code, day""",
            f.facility_code,
            f.method,
            f.brand,
            f.period.since,
            f.period.until,
        )
    )
