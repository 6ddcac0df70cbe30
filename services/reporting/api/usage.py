"""Online usage rate (オンライン利用率, 件数ベース): applications by channel, procedure,
department and month; and the first KPI, applications by channel all time."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.reporting import domain, store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    APPLICATION_FAMILY,
    CATALOG,
    CSV_RESPONSE,
    NOT_MODIFIED,
    SHARE_DOC,
    Row,
    csv_answer,
    in_month,
    json_answer,
    kept,
    month_parts,
    month_text,
    share_text,
)
from services.reporting.api.deps import ApplicationQuery, Ctx
from services.reporting.store import ApplicationFilter, Period
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)

USAGE_TABLE = "applications_month_procedure"
USAGE_READS = (USAGE_TABLE, "applications_by_month")
"""What usage answers for a period read (``store.applications_by`` with months), besides the
catalog."""


class ChannelCounts(BaseModel):
    """Applications received, by channel, and the share that came online."""

    online: int
    counter: int
    mail: int
    total: int
    online_share: float | None = Field(description=SHARE_DOC)


def channels(row: Any, key: str | None = None, value: object = None) -> Row:
    """ChannelCounts of a row; ``key``: one more field, after them (the row's own key)."""
    out = {
        "online": row["online"],
        "counter": row["counter"],
        "mail": row["mail"],
        "total": row["total"],
        "online_share": domain.share(row["online"], row["total"]),
    }
    if key is not None:  # the row's own key, last (the response model's order)
        out[key] = value
    return out


class ProcedureUsage(ChannelCounts):
    procedure_code: str


class MonthUsage(ChannelCounts):
    month: str = Field(examples=["2026-11"])


class DepartmentUsage(ChannelCounts):
    department: str | None = Field(description="部局; null for procedures not in the catalog.")


class OnlineUsage(BaseModel):
    """Online usage rate (件数ベース, digital take-up): applications that came online / all."""

    rounding: str = domain.SHARE_ROUNDING
    total: ChannelCounts
    by_procedure: list[ProcedureUsage]
    by_department: list[DepartmentUsage]
    by_month: list[MonthUsage]


@router.get(
    "/applications/by-channel",
    response_model=ChannelCounts,
    summary="Applications by channel, all time (the first KPI)",
    description=SHARE_DOC,
)
async def applications_by_channel(ctx: Ctx, request: Request) -> Response:
    async def build() -> Answer:
        [row] = await store.applications_by(ctx.pool, [], ApplicationFilter())
        return json_answer(channels(row))

    return await kept(ctx, request, ("by-channel",), APPLICATION_FAMILY, build)


@router.get(
    "/online-usage",
    response_model=OnlineUsage,
    summary="Online usage rate by procedure, department and month",
    description=SHARE_DOC,
)
async def online_usage(ctx: Ctx, request: Request, f: ApplicationQuery) -> Response:
    return await kept(
        ctx,
        request,
        ("online-usage", f),
        APPLICATION_FAMILY,
        lambda: _online_usage(ctx, f),
        period=f.period,
        reads=USAGE_READS,
    )


async def _online_usage(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
    by_catalog = f.procedure_code is None and (f.department or f.group) is not None
    [total], by_procedure, by_department, by_month = await asyncio.gather(
        store.applications_by(ctx.pool, [], f),
        store.applications_by(ctx.pool, ["procedure_code"], f),
        store.applications_by(ctx.pool, ["department"], f),
        usage_by_month(ctx, f) if by_catalog else store.applications_by(ctx.pool, ["month"], f),
    )
    return json_answer(
        {
            "rounding": domain.SHARE_ROUNDING,
            "total": channels(total),
            "by_procedure": [
                channels(r, "procedure_code", r["procedure_code"]) for r in by_procedure
            ],
            "by_department": [channels(r, "department", r["department"]) for r in by_department],
            "by_month": [channels(r, "month", month_text(r["month"])) for r in by_month],
        }
    )


async def usage_by_month(ctx: ServiceContext, f: ApplicationFilter) -> list[Any]:
    """A department's or a group's usage by month (``applications_by(["month"], f)``), month
    by month: each month's sums over the catalog join (24,000 month × procedure rows for group
    2 in a year) are kept as a part under the greater of that month's version and the
    catalog's (migration 0013: from one sequence, so either changing makes a greater one), and
    only the months whose part is not kept are summed again."""
    versions, catalog = await asyncio.gather(
        store.month_versions(ctx.pool, [USAGE_TABLE], f.period),
        store.period_version(ctx.pool, [], Period(), CATALOG),
    )

    async def build(missing: list[date]) -> dict[date, tuple[Any, int]]:
        read = await asyncio.gather(
            *(store.applications_by(ctx.pool, ["month"], in_month(f, m)) for m in missing)
        )  # none of its procedures that month: no row, an empty part
        return {m: (rows[0], 100) for m, rows in zip(missing, read, strict=True) if rows}

    found = await month_parts(ctx).assemble(
        ("usage-by-month", f.department, f.group),
        {month: max(version, catalog) for month, version in versions.items()},
        build,
    )
    return [sums for sums in found.values() if sums]


@router.get(
    "/online-usage.csv",
    response_class=Response,
    summary="Online usage rate as CSV: one row per month and procedure",
    responses=CSV_RESPONSE,
)
async def online_usage_csv(ctx: Ctx, request: Request, f: ApplicationQuery) -> Response:
    return await kept(
        ctx,
        request,
        ("online-usage.csv", f),
        APPLICATION_FAMILY,
        lambda: _online_usage_csv(ctx, f),
        period=f.period,
        reads=USAGE_READS,
    )


async def _online_usage_csv(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
    rows = await store.applications_by(ctx.pool, ["month", "procedure_code"], f)
    return csv_answer(
        "online-usage",
        ["month", "procedure_code", "online", "counter", "mail", "total", "online_share"],
        (
            [
                month_text(r["month"]),
                r["procedure_code"],
                r["online"],
                r["counter"],
                r["mail"],
                r["total"],
                share_text(domain.share(r["online"], r["total"])),
            ]
            for r in rows
        ),
    )
