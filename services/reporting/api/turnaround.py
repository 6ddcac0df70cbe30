"""Certificate turnaround (交付までの時間) and completion rate, by procedure and month of
submission."""

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

TURNAROUND_READS = (
    "turnaround_monthly",
    "turnaround_by_month",
    "turnaround_histogram",
    "turnaround_month_histogram",
)
"""What turnaround answers for a period read (``store.turnaround_by`` with months), besides
the catalog."""


class TurnaroundFigures(TypedDict):
    """Applications submitted, completed (certificate issued or approved), closed otherwise
    (rejected, withdrawn), and the time from submission to certificate."""

    submitted: int
    completed: int
    closed_without_completion: int
    completion_rate: Annotated[
        float | None, Field(description="completed / submitted. " + SHARE_DOC)
    ]
    certificates_issued: int
    median_seconds: Annotated[
        float | None,
        Field(description="Median submitted -> certificate issued (interpolated), 1 decimal."),
    ]
    p90_seconds: Annotated[
        float | None,
        Field(
            description="90th percentile submitted -> certificate issued (interpolated), 1 decimal."
        ),
    ]


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def turnaround(row: Any) -> TurnaroundFigures:
    return {
        "submitted": row["submitted"],
        "completed": row["completed"],
        "closed_without_completion": row["closed"],
        "completion_rate": domain.share(row["completed"], row["submitted"]),
        "certificates_issued": row["certificates_issued"],
        "median_seconds": _seconds(row["median_seconds"]),
        "p90_seconds": _seconds(row["p90_seconds"]),
    }


class ProcedureTurnaround(TurnaroundFigures):
    procedure_code: str


class MonthTurnaround(TurnaroundFigures):
    month: Annotated[
        str, Field(description="Month of submission (Asia/Tokyo).", examples=["2026-11"])
    ]


class CertificateTurnaround(TypedDict):
    """Certificate turnaround and completion rate, by procedure and month of submission."""

    rounding: str
    total: TurnaroundFigures
    by_procedure: list[ProcedureTurnaround]
    by_month: list[MonthTurnaround]


@router.get(
    "/certificate-turnaround",
    response_model=CertificateTurnaround,
    summary="Certificate turnaround (median, p90) and completion rate by procedure and month",
    description=SHARE_DOC,
)
async def certificate_turnaround(ctx: Ctx, request: Request, f: ApplicationQuery) -> Response:
    async def build() -> Answer:
        return json_answer(await _certificate_turnaround(ctx, f))

    return await kept(
        ctx,
        request,
        ("certificate-turnaround", f),
        APPLICATION_FAMILY,
        build,
        period=f.period,
        reads=TURNAROUND_READS,
    )


async def _certificate_turnaround(
    ctx: ServiceContext, f: ApplicationFilter
) -> CertificateTurnaround:
    [total], by_procedure, by_month = await asyncio.gather(
        store.turnaround_by(ctx.pool, [], f),
        store.turnaround_by(ctx.pool, ["procedure_code"], f),
        store.turnaround_by(ctx.pool, ["month"], f),
    )
    return {
        "rounding": domain.SHARE_ROUNDING,
        "total": turnaround(total),
        "by_procedure": [
            {**turnaround(r), "procedure_code": r["procedure_code"]} for r in by_procedure
        ],
        "by_month": [{**turnaround(r), "month": month_text(r["month"])} for r in by_month],
    }


@router.get(
    "/certificate-turnaround.csv",
    response_class=Response,
    summary="Turnaround and completion as CSV: one row per month and procedure",
    responses=CSV_RESPONSE,
)
async def certificate_turnaround_csv(ctx: Ctx, request: Request, f: ApplicationQuery) -> Response:
    return await kept(
        ctx,
        request,
        ("certificate-turnaround.csv", f),
        APPLICATION_FAMILY,
        lambda: _certificate_turnaround_csv(ctx, f),
        period=f.period,
        reads=TURNAROUND_READS,
    )


_CSV_HEADER = [
    "month",
    "procedure_code",
    "submitted",
    "completed",
    "closed_without_completion",
    "completion_rate",
    "certificates_issued",
    "median_seconds",
    "p90_seconds",
]


async def _certificate_turnaround_csv(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
    rows = await store.turnaround_by(ctx.pool, ["month", "procedure_code"], f)
    share, seconds = domain.share, _seconds
    out = []
    for r in rows:  # 4,300 a month: written straight from the row (the figures of turnaround)
        submitted, completed = r["submitted"], r["completed"]
        median, p90 = r["median_seconds"], r["p90_seconds"]
        out.append(
            [
                month_text(r["month"]),
                r["procedure_code"],
                submitted,
                completed,
                r["closed"],
                share_text(share(completed, submitted)),
                r["certificates_issued"],
                "" if median is None else seconds(median),
                "" if p90 is None else seconds(p90),
            ]
        )
    return csv_answer("certificate-turnaround", _CSV_HEADER, out)
