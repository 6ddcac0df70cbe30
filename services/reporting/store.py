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


@dataclass(frozen=True)
class PaymentFilter:
    facility_code: str | None = None
    method: str | None = None
    brand: str | None = None
    period: Period = Period()


ApplicationKey = Literal["procedure_code", "month"]
_APPLICATION_KEYS: dict[str, str] = {
    "procedure_code": "procedure_code",
    "month": "month",
}


async def applications_by(
    conn: Conn, keys: Sequence[ApplicationKey], f: ApplicationFilter
) -> list[asyncpg.Record]:
    """Applications by channel (online, counter, mail, total), grouped by ``keys``."""
    cols = [_APPLICATION_KEYS[k] for k in keys]
    select = "".join(f"{c}, " for c in cols)
    group = f"GROUP BY {', '.join(cols)} ORDER BY {', '.join(cols)}" if cols else ""
    return list(
        await conn.fetch(
            f"""SELECT {select}
                   coalesce(sum(count) FILTER (WHERE channel = 'online'), 0)::bigint AS online,
                   coalesce(sum(count) FILTER (WHERE channel = 'counter'), 0)::bigint AS counter,
                   coalesce(sum(count) FILTER (WHERE channel = 'mail'), 0)::bigint AS mail,
                   coalesce(sum(count), 0)::bigint AS total
                FROM applications_monthly
                WHERE ($1::text IS NULL OR procedure_code = $1)
                  AND ($2::date IS NULL OR month >= $2)
                  AND ($3::date IS NULL OR month < $3)
                {group}""",
            f.procedure_code,
            f.period.since,
            f.period.until,
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
