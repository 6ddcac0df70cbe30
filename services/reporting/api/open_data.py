"""Open data (オープンデータ, ファイルレス): monthly aggregates only, with the local government
code; no ids, no times, no free text, nothing about a person."""

from __future__ import annotations

import asyncio
import itertools
import operator
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.reporting import answers, domain, store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    BOTH_FAMILIES,
    NOT_MODIFIED,
    SHARE_DOC,
    Row,
    first,
    kept,
    month_parts,
    month_text,
)
from services.reporting.api.coverage import DepartmentCoverage, coverage
from services.reporting.api.deps import Ctx, PeriodQuery
from services.reporting.api.turnaround import MonthTurnaround, turnaround
from services.reporting.api.usage import USAGE_TABLE
from services.reporting.store import ApplicationFilter, CatalogFilter, Period
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/open-data", tags=["open data"], responses=NOT_MODIFIED)

KORIYAMA_CODE = "072036"
"""全国地方公共団体コード of Koriyama."""
CASHLESS_TABLE = "payments_facility_days"


class OpenUsageMonth(BaseModel):
    month: str
    procedure_code: str
    online: int
    total: int
    online_share: float | None


class OpenCashlessMonth(BaseModel):
    month: str
    facility_code: str
    count: int
    cashless_count: int
    amount_yen: int
    cashless_amount_yen: int
    cashless_share_by_count: float | None
    cashless_share_by_amount: float | None


class OpenData(BaseModel):
    """Aggregated, non-personal KPI figures (ファイルレス: machine-readable open data)."""

    local_government_code: str = KORIYAMA_CODE
    generated_at: datetime = Field(
        description="When these figures were computed: an answer is kept, and served again "
        "as it is, until the next event changes the read-models."
    )
    rounding: str = domain.SHARE_ROUNDING
    online_usage: list[OpenUsageMonth]
    cashless_share: list[OpenCashlessMonth]
    online_coverage_by_department: list[DepartmentCoverage]
    completion_by_month: list[MonthTurnaround]


@router.get(
    "/kpi",
    response_model=OpenData,
    summary="Open data: monthly KPI figures, aggregated only (no ids, no times, no people)",
    description=SHARE_DOC,
)
async def open_kpi(ctx: Ctx, request: Request, period: PeriodQuery) -> Response:
    return await kept(
        ctx, request, ("open-data", period), BOTH_FAMILIES, lambda: _open_kpi(ctx, period)
    )


async def _open_kpi(ctx: ServiceContext, period: Period) -> Answer:
    usage, cashless, departments, completion = await asyncio.gather(
        open_usage(ctx, period),
        open_cashless(ctx, period),
        store.coverage_by(ctx.pool, ["department"], CatalogFilter()),
        store.turnaround_by(ctx.pool, ["month"], ApplicationFilter(period=period)),
    )
    head = orjson.dumps(
        {
            "local_government_code": KORIYAMA_CODE,
            "generated_at": datetime.now(UTC).isoformat(),
            "rounding": domain.SHARE_ROUNDING,
        }
    )
    tail = orjson.dumps(
        {
            "online_coverage_by_department": [
                coverage(r, "department", r["department"]) for r in departments
            ],
            "completion_by_month": [
                turnaround(r, "month", month_text(r["month"])) for r in completion
            ],
        }
    )
    # the bytes orjson gives for the whole body, with the months' rows as kept chunks
    pieces: list[bytes | answers.Chunk] = [head[:-1], b',"online_usage":[']
    pieces += _commas(usage)
    pieces.append(b'],"cashless_share":[')
    pieces += _commas(cashless)
    pieces += [b"],", tail[1:]]
    return Answer.joined(pieces, "application/json")


def _commas(chunks: list[answers.Chunk]) -> list[bytes | answers.Chunk]:
    """A JSON array's elements from chunks of them (each a part of an array, no brackets)."""
    out: list[bytes | answers.Chunk] = []
    for chunk in chunks:
        if out:
            out.append(b",")
        out.append(chunk)
    return out


async def open_usage(ctx: ServiceContext, period: Period) -> list[answers.Chunk]:
    """Open data's online usage by month and procedure (40,000 rows a year), in month
    chunks (``_month_chunks``)."""
    return await _month_chunks(ctx, period, USAGE_TABLE, usage_of_months, _usage_rows)


def _usage_rows(month: date, rows: Iterable[Any]) -> list[Row]:
    share = domain.share
    return [  # unpacked rather than looked up by name
        {
            "month": month_text(month),
            "procedure_code": code,
            "online": online,
            "total": total,
            "online_share": share(online, total),
        }
        for _month_of, code, online, _counter, _mail, total in rows
    ]


async def open_cashless(ctx: ServiceContext, period: Period) -> list[answers.Chunk]:
    """Open data's cashless share by month and facility, in month chunks of the
    facility-days (``_month_chunks``)."""
    return await _month_chunks(ctx, period, CASHLESS_TABLE, cashless_of_months, _cashless_rows)


def _cashless_rows(month: date, rows: Iterable[Any]) -> list[Row]:
    share = domain.share
    return [
        {
            "month": month_text(month),
            "facility_code": facility,
            "count": count,
            "cashless_count": cashless_count,
            "amount_yen": amount,
            "cashless_amount_yen": cashless_amount,
            "cashless_share_by_count": share(cashless_count, count),
            "cashless_share_by_amount": share(cashless_amount, amount),
        }
        for _month_of, facility, count, amount, cashless_count, cashless_amount in rows
    ]


async def _month_chunks(
    ctx: ServiceContext,
    period: Period,
    table: str,
    read: Callable[[Any, list[date]], Awaitable[list[Any]]],
    encode: Callable[[date, Iterable[Any]], list[Row]],
) -> list[answers.Chunk]:
    """A list of open data month by month, from ``table``'s rows: the months whose rows
    changed since they were encoded are ``read`` (rows in month order, the month first) and
    encoded again, the others' JSON is reused (``answers.MonthParts``), and so are their
    digests and deflate streams (``answers.Chunk``). The same bytes as encoding the whole list
    at once: each month's chunk is its rows' JSON array without the brackets; the months with
    rows are to be joined with commas."""
    versions = await store.month_versions(ctx.pool, [table], period)

    async def build(missing: list[date]) -> dict[date, tuple[answers.Chunk, int]]:
        built = {}
        for month, group in itertools.groupby(await read(ctx.pool, missing), key=first):
            part = orjson.dumps(encode(month, group))[1:-1]
            # counted with its deflate stream, made when first sent gzipped (about 8 %)
            built[month] = (answers.Chunk(part), len(part) + len(part) // 8)
        return built

    parts = await month_parts(ctx).assemble(table, versions, build)
    return [p for p in parts.values() if p]


_CODE = operator.itemgetter(1)


async def usage_of_months(conn: store.Conn, months: Sequence[date]) -> list[asyncpg.Record]:
    """Online usage by month and procedure for these months, in month and procedure order:
    month, procedure_code, online, counter, mail, total (what ``store.applications_by`` gives for
    those keys, a month at a time)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT month, procedure_code, online, counter, mail, online + counter + mail AS total
           FROM applications_month_procedure WHERE month = ANY ($1::date[])""",
        sorted(months),
    )
    # sorted here: PostgreSQL reads a month's 3,300 rows by a bitmap scan and then sorts them
    # in 1.4 ms, Python by code in 0.5 (code point order is UTF-8 byte order: collation C's),
    # then by month (stable; one run per month: a pass); a (month, code) key takes 1.7 ms
    rows.sort(key=_CODE)
    rows.sort(key=first)
    return rows


async def cashless_of_months(conn: store.Conn, months: Sequence[date]) -> list[asyncpg.Record]:
    """Payments standing and their cashless part by month and facility for these months, in
    month and facility order: month, facility_code, count, amount_yen, cashless_count,
    cashless_amount_yen (what ``store.payments_by`` gives for those keys, from the facility-days,
    whose months are versioned: migration 0013)."""
    wanted = set(months)
    rows = await conn.fetch(
        """SELECT date_trunc('month', day::timestamp)::date AS month, facility_code,
                  sum(count)::bigint AS count, sum(amount_yen)::bigint AS amount_yen,
                  sum(cashless_count)::bigint AS cashless_count,
                  sum(cashless_amount_yen)::bigint AS cashless_amount_yen
           FROM payments_facility_days WHERE day >= $1 AND day < $2
           GROUP BY 1, 2 ORDER BY 1, 2""",
        min(wanted),
        domain.month_end(max(wanted)),
    )
    # one range (nearly always one month); months between the wanted ones are left out here
    return [r for r in rows if r[0] in wanted]
