"""Revenue (歳入) by facility and day: gross, the processor's fee and the net from the day's
reconciled settlement batches (調定)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from typing_extensions import TypedDict

from services.reporting import store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    CSV_RESPONSE,
    NOT_MODIFIED,
    PAYMENT_FAMILY,
    csv_answer,
    json_answer,
    kept,
)
from services.reporting.api.deps import Ctx, PaymentQuery
from services.reporting.store import PaymentFilter
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)


class RevenueDay(TypedDict):
    """Revenue of one facility on one day (歳入), recorded gross: a 300-yen fee is 300 yen of
    revenue even when the processor keeps its fee (繰替払い); the fee and the net remittance
    are shown apart, from the day's reconciled settlement batches."""

    facility_code: str
    day: date
    count: int
    gross_yen: int
    fee_yen: Annotated[
        int | None,
        Field(
            description="Processor fees of the day's reconciled batches; null when filtered "
            "by method or brand (a batch's fee is not split by method)."
        ),
    ]
    net_yen: Annotated[int | None, Field(description="gross_yen - fee_yen.")]
    reconciled: Annotated[
        bool | None,
        Field(
            description="true: every settlement batch of the day matched the ledger (調定済); "
            "false: a batch did not match; null: no settlement yet."
        ),
    ]


class Revenue(TypedDict):
    total_gross_yen: int
    total_fee_yen: int | None
    total_net_yen: int | None
    days: list[RevenueDay]


@router.get(
    "/revenue",
    response_model=Revenue,
    summary="Revenue by facility and day (gross: captures less refunds and voids)",
)
async def revenue(ctx: Ctx, request: Request, f: PaymentQuery) -> Response:
    async def build() -> Answer:
        return json_answer(await revenue_rows(ctx, f))

    return await kept(ctx, request, ("revenue", f), PAYMENT_FAMILY, build)


async def revenue_rows(ctx: ServiceContext, f: PaymentFilter) -> Revenue:
    whole_day = f.method is None and f.brand is None
    days: list[RevenueDay] = []
    total_gross = total_fee = 0
    # rows unpacked rather than looked up by name: a year is twelve thousand facility-days
    for facility, day, count, gross, day_fee, reconciled in await store.revenue_by_day(ctx.pool, f):
        fee = (day_fee or 0) if whole_day else None
        total_gross += gross
        total_fee += fee or 0
        days.append(
            {
                "facility_code": facility,
                "day": day,
                "count": count,
                "gross_yen": gross,
                "fee_yen": fee,
                "net_yen": None if fee is None else gross - fee,
                "reconciled": reconciled,
            }
        )
    return {
        "total_gross_yen": total_gross,
        "total_fee_yen": total_fee if whole_day else None,
        "total_net_yen": total_gross - total_fee if whole_day else None,
        "days": days,
    }


@router.get(
    "/revenue.csv",
    response_class=Response,
    summary="Revenue as CSV: one row per facility and day",
    responses=CSV_RESPONSE,
)
async def revenue_csv(ctx: Ctx, request: Request, f: PaymentQuery) -> Response:
    async def build() -> Answer:
        return _revenue_csv(await revenue_rows(ctx, f))

    return await kept(ctx, request, ("revenue.csv", f), PAYMENT_FAMILY, build)


def _revenue_csv(body: Revenue) -> Answer:
    return csv_answer(
        "revenue",
        ["facility_code", "day", "count", "gross_yen", "fee_yen", "net_yen", "reconciled"],
        (
            [
                d["facility_code"],
                d["day"],
                d["count"],
                d["gross_yen"],
                "" if d["fee_yen"] is None else d["fee_yen"],
                "" if d["net_yen"] is None else d["net_yen"],
                "" if d["reconciled"] is None else str(d["reconciled"]).lower(),
            ]
            for d in body["days"]
        ),
    )
