"""Online usage rate (オンライン利用率, 件数ベース): applications by channel, procedure,
department and month; and the first KPI, applications by channel all time."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from typing_extensions import TypedDict

from services.reporting import domain, store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    APPLICATION_FAMILY,
    CSV_RESPONSE,
    NOT_MODIFIED,
    SHARE_DOC,
    csv_answer,
    json_answer,
    kept,
    month_text,
    share_text,
)
from services.reporting.api.deps import ApplicationQuery, Ctx
from services.reporting.store import ApplicationFilter
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)

USAGE_TABLE = "applications_month_procedure"
USAGE_READS = (USAGE_TABLE, "applications_by_month")
"""What usage answers for a period read (``store.applications_by`` with months), besides the
catalog."""


class ChannelCounts(TypedDict):
    """Applications received, by channel, and the share that came online."""

    online: int
    counter: int
    mail: int
    total: int
    online_share: Annotated[float | None, Field(description=SHARE_DOC)]


def channels(row: Any) -> ChannelCounts:
    return {
        "online": row["online"],
        "counter": row["counter"],
        "mail": row["mail"],
        "total": row["total"],
        "online_share": domain.share(row["online"], row["total"]),
    }


class ProcedureUsage(ChannelCounts):
    procedure_code: str


class MonthUsage(ChannelCounts):
    month: Annotated[str, Field(examples=["2026-11"])]


class DepartmentUsage(ChannelCounts):
    department: Annotated[
        str | None, Field(description="部局; null for procedures not in the catalog.")
    ]


class OnlineUsage(TypedDict):
    """Online usage rate (件数ベース, digital take-up): applications that came online / all."""

    rounding: str
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
    async def build() -> Answer:
        return json_answer(await _online_usage(ctx, f))

    return await kept(
        ctx,
        request,
        ("online-usage", f),
        APPLICATION_FAMILY,
        build,
        period=f.period,
        reads=USAGE_READS,
    )


async def _online_usage(ctx: ServiceContext, f: ApplicationFilter) -> OnlineUsage:
    [total], by_procedure, by_department, by_month = await asyncio.gather(
        store.applications_by(ctx.pool, [], f),
        store.applications_by(ctx.pool, ["procedure_code"], f),
        store.applications_by(ctx.pool, ["department"], f),
        store.applications_by(ctx.pool, ["month"], f),
    )
    return {
        "rounding": domain.SHARE_ROUNDING,
        "total": channels(total),
        "by_procedure": [
            {**channels(r), "procedure_code": r["procedure_code"]} for r in by_procedure
        ],
        "by_department": [{**channels(r), "department": r["department"]} for r in by_department],
        "by_month": [{**channels(r), "month": month_text(r["month"])} for r in by_month],
    }


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
