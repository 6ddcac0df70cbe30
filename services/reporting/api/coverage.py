"""Online procedure coverage (手続数ベースのオンライン化率): procedures that can be done
online / all procedures in the catalog, by group, department and month (planned beside
actual)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from typing_extensions import TypedDict

from contracts.applications import ProcedureGroup
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
from services.reporting.api.deps import CoverageFilter, CoverageQuery, Ctx
from services.reporting.store import CatalogFilter
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)


class CoverageFigures(TypedDict):
    online: Annotated[int, Field(description="Procedures that can be done online.")]
    procedures: Annotated[int, Field(description="Procedures in the catalog.")]
    coverage_share: Annotated[float | None, Field(description=SHARE_DOC)]


def coverage(row: Any) -> CoverageFigures:
    return {
        "online": row["online"],
        "procedures": row["procedures"],
        "coverage_share": domain.share(row["online"], row["procedures"]),
    }


class GroupCoverage(CoverageFigures):
    group: ProcedureGroup


class DepartmentCoverage(CoverageFigures):
    department: str


class MonthCoverage(CoverageFigures):
    """Online by the end of ``month`` (actual) beside the roadmap (planned)."""

    month: Annotated[str, Field(examples=["2027-06"])]
    planned: Annotated[
        int, Field(description="Procedures planned to be online by the end of the month.")
    ]
    planned_share: Annotated[float | None, Field(description=SHARE_DOC)]


class OnlineCoverage(TypedDict):
    """Online procedure coverage (手続数ベース): procedures online / all procedures."""

    rounding: str
    total: CoverageFigures
    by_group: list[GroupCoverage]
    by_department: list[DepartmentCoverage]
    by_month: list[MonthCoverage]


@router.get(
    "/online-coverage",
    response_model=OnlineCoverage,
    summary="Online procedure coverage by group and department; monthly, planned vs actual",
    description=SHARE_DOC + " The monthly series runs from `from` (default: the first month "
    "a procedure went or was planned to go online) to `to` (default: this month in Tokyo); "
    "the denominator is the catalog as it is now.",
)
async def online_coverage(ctx: Ctx, request: Request, f: CoverageQuery) -> Response:
    async def build() -> Answer:
        return json_answer(await _online_coverage(ctx, f))

    return await kept(ctx, request, ("online-coverage", *f), APPLICATION_FAMILY, build)


async def _online_coverage(ctx: ServiceContext, f: CoverageFilter) -> OnlineCoverage:
    [total], by_group, by_department, by_month = await asyncio.gather(
        store.coverage_by(ctx.pool, [], f.catalog),
        store.coverage_by(ctx.pool, ["procedure_group"], f.catalog),
        store.coverage_by(ctx.pool, ["department"], f.catalog),
        coverage_series(ctx.pool, f.catalog, f.period.since, f.last),
    )
    return {
        "rounding": domain.SHARE_ROUNDING,
        "total": coverage(total),
        "by_group": [{**coverage(r), "group": r["procedure_group"]} for r in by_group],
        "by_department": [{**coverage(r), "department": r["department"]} for r in by_department],
        "by_month": [
            {
                **coverage(r),
                "month": month_text(r["month"]),
                "planned": r["planned"],
                "planned_share": domain.share(r["planned"], r["procedures"]),
            }
            for r in by_month
        ],
    }


@router.get(
    "/online-coverage.csv",
    response_class=Response,
    summary="Online procedure coverage as CSV: one row per month, planned beside actual",
    responses=CSV_RESPONSE,
)
async def online_coverage_csv(ctx: Ctx, request: Request, f: CoverageQuery) -> Response:
    async def build() -> Answer:
        return _online_coverage_csv(await _online_coverage(ctx, f))

    return await kept(ctx, request, ("online-coverage.csv", *f), APPLICATION_FAMILY, build)


def _online_coverage_csv(body: OnlineCoverage) -> Answer:
    return csv_answer(
        "online-coverage",
        ["month", "online", "planned", "procedures", "coverage_share", "planned_share"],
        (
            [
                m["month"],
                m["online"],
                m["planned"],
                m["procedures"],
                share_text(m["coverage_share"]),
                share_text(m["planned_share"]),
            ]
            for m in body["by_month"]
        ),
    )


async def coverage_series(
    conn: store.Conn, f: CatalogFilter, since: date | None, until: date
) -> list[asyncpg.Record]:
    """Month by month: procedures online by the end of the month (actual) and procedures
    planned to be online by then (the roadmap's quarter, or the actual date when the
    procedure went online without a plan). ``procedures`` is the catalog as it is now."""
    # Procedures counted by the month they went (or are planned to go) online, then summed up
    # to each month of the series: a few hundred groups, not the catalog once per month.
    return list(
        await conn.fetch(
            """WITH cat AS MATERIALIZED (
                   SELECT date_trunc('month', online_since)::date AS online,
                          date_trunc('month', coalesce(planned_by_month, online_since))::date
                              AS planned
                   FROM procedures
                   WHERE ($1::text IS NULL OR department = $1)
                     AND ($2::smallint IS NULL OR procedure_group = $2)),
               bounds AS (
                   SELECT coalesce($3::date, least(min(online), min(planned)), $4::date) AS first,
                          count(*)::bigint AS procedures
                   FROM cat),
               online AS MATERIALIZED (
                   SELECT online AS month, count(*) AS n FROM cat
                   WHERE online IS NOT NULL GROUP BY online),
               planned AS MATERIALIZED (
                   SELECT planned AS month, count(*) AS n FROM cat
                   WHERE planned IS NOT NULL GROUP BY planned)
               SELECT m::date AS month,
                      (SELECT coalesce(sum(n), 0) FROM online o WHERE o.month <= m)::bigint
                          AS online,
                      (SELECT coalesce(sum(n), 0) FROM planned p WHERE p.month <= m)::bigint
                          AS planned,
                      bounds.procedures
               FROM bounds, generate_series(bounds.first, $4::date, interval '1 month') AS m
               ORDER BY m""",
            f.department,
            f.group,
            since,
            until,
        )
    )
