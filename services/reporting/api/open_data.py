"""Open data (オープンデータ, ファイルレス): monthly aggregates only, with the local government
code; no ids, no times, no free text, nothing about a person."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from typing_extensions import TypedDict

from services.reporting import domain, store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    BOTH_FAMILIES,
    NOT_MODIFIED,
    SHARE_DOC,
    json_answer,
    kept,
    month_text,
)
from services.reporting.api.coverage import DepartmentCoverage, coverage
from services.reporting.api.deps import Ctx, PeriodQuery
from services.reporting.api.turnaround import MonthTurnaround, turnaround
from services.reporting.store import ApplicationFilter, CatalogFilter, PaymentFilter, Period
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/open-data", tags=["open data"], responses=NOT_MODIFIED)

KORIYAMA_CODE = "072036"
"""全国地方公共団体コード of Koriyama."""


class OpenUsageMonth(TypedDict):
    month: str
    procedure_code: str
    online: int
    total: int
    online_share: float | None


class OpenCashlessMonth(TypedDict):
    month: str
    facility_code: str
    count: int
    cashless_count: int
    amount_yen: int
    cashless_amount_yen: int
    cashless_share_by_count: float | None
    cashless_share_by_amount: float | None


class OpenData(TypedDict):
    """Aggregated, non-personal KPI figures (ファイルレス: machine-readable open data)."""

    local_government_code: Annotated[str, Field(examples=[KORIYAMA_CODE])]
    generated_at: Annotated[
        datetime,
        Field(
            description="When these figures were computed: an answer is kept, and served "
            "again as it is, until the next event changes the read-models."
        ),
    ]
    rounding: str
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
    async def build() -> Answer:
        return json_answer(await _open_kpi(ctx, period))

    return await kept(ctx, request, ("open-data", period), BOTH_FAMILIES, build)


async def _open_kpi(ctx: ServiceContext, period: Period) -> OpenData:
    usage, cashless, departments, completion = await asyncio.gather(
        store.applications_by(
            ctx.pool, ["month", "procedure_code"], ApplicationFilter(period=period)
        ),
        store.payments_by(ctx.pool, ["month", "facility_code"], PaymentFilter(period=period)),
        store.coverage_by(ctx.pool, ["department"], CatalogFilter()),
        store.turnaround_by(ctx.pool, ["month"], ApplicationFilter(period=period)),
    )
    share = domain.share
    return {
        "local_government_code": KORIYAMA_CODE,
        "generated_at": datetime.now(UTC),
        "rounding": domain.SHARE_ROUNDING,
        "online_usage": [
            {
                "month": month_text(r["month"]),
                "procedure_code": r["procedure_code"],
                "online": r["online"],
                "total": r["total"],
                "online_share": share(r["online"], r["total"]),
            }
            for r in usage
        ],
        "cashless_share": [
            {
                "month": month_text(r["month"]),
                "facility_code": r["facility_code"],
                "count": r["count"],
                "cashless_count": r["cashless_count"],
                "amount_yen": r["amount_yen"],
                "cashless_amount_yen": r["cashless_amount_yen"],
                "cashless_share_by_count": share(r["cashless_count"], r["count"]),
                "cashless_share_by_amount": share(r["cashless_amount_yen"], r["amount_yen"]),
            }
            for r in cashless
        ],
        "online_coverage_by_department": [
            {**coverage(r), "department": r["department"]} for r in departments
        ],
        "completion_by_month": [
            {**turnaround(r), "month": month_text(r["month"])} for r in completion
        ],
    }
