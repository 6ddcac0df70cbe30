"""Revenue (歳入) by facility and day: gross, the processor's fee and the net from the day's
reconciled settlement batches (調定)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import date
from typing import TypeAlias

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.reporting import store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    CSV_RESPONSE,
    NOT_MODIFIED,
    PAYMENT_FAMILY,
    Row,
    csv_answer,
    day_text,
    first,
    in_month,
    json_answer,
    kept,
    month_parts,
)
from services.reporting.api.deps import Ctx, PaymentQuery
from services.reporting.store import PaymentFilter
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)

REVENUE_TABLES = ("payments_facility_days", "settlements")


class RevenueDay(BaseModel):
    """Revenue of one facility on one day (歳入), recorded gross: a 300-yen fee is 300 yen of
    revenue even when the processor keeps its fee (繰替払い); the fee and the net remittance
    are shown apart, from the day's reconciled settlement batches."""

    facility_code: str
    day: date
    count: int
    gross_yen: int
    fee_yen: int | None = Field(
        description="Processor fees of the day's reconciled batches; null when filtered by "
        "method or brand (a batch's fee is not split by method)."
    )
    net_yen: int | None = Field(description="gross_yen - fee_yen.")
    reconciled: bool | None = Field(
        description="true: every settlement batch of the day matched the ledger (調定済); "
        "false: a batch did not match; null: no settlement yet."
    )


class Revenue(BaseModel):
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
        if f.method is None and f.brand is None:
            return await revenue_by_months(ctx, f)
        return json_answer(await revenue_rows(ctx, f))

    return await kept(ctx, request, ("revenue", f), PAYMENT_FAMILY, build)


_RevenueMonth: TypeAlias = dict[str, tuple[bytes, int, int]]
"""A month of revenue as kept: per facility, its days' JSON (an array without its brackets),
gross and fees."""


async def revenue_by_months(ctx: ServiceContext, f: PaymentFilter) -> Answer:
    """``/kpi/revenue`` without a method or brand, month by month: the months whose
    facility-days or settlements changed since they were encoded are read and encoded again,
    the others' are reused (``answers.MonthParts``), and the facilities' days are joined in
    the answer's order (facility, then day). The same bytes as ``revenue_rows``' answer."""
    versions = await store.month_versions(ctx.pool, REVENUE_TABLES, f.period)

    async def build(missing: list[date]) -> dict[date, tuple[_RevenueMonth, int]]:
        read = await asyncio.gather(
            *(store.revenue_by_day(ctx.pool, in_month(f, m)) for m in missing)
        )
        built = {}
        for month, rows in zip(missing, read, strict=True):
            facilities: _RevenueMonth = {}
            for facility, group in itertools.groupby(rows, key=first):
                days = []
                gross_sum = fee_sum = 0
                for _facility, day, count, gross, day_fee, reconciled in group:
                    fee = day_fee or 0
                    gross_sum += gross
                    fee_sum += fee
                    days.append(_revenue_day(facility, day, count, gross, fee, reconciled))
                facilities[facility] = (orjson.dumps(days)[1:-1], gross_sum, fee_sum)
            size = sum(len(days) + 100 for days, _, _ in facilities.values())
            built[month] = (facilities, size)
        return built

    months: dict[date, _RevenueMonth] = await month_parts(ctx).assemble(
        ("revenue", f.facility_code), versions, build
    )
    chunks: list[bytes] = []
    total_gross = total_fee = 0
    for facility in sorted({code for part in months.values() for code in part}):
        for part in months.values():  # in month order
            if (found := part.get(facility)) is not None:
                chunks.append(found[0])
                total_gross += found[1]
                total_fee += found[2]
    return json_answer(
        {
            "total_gross_yen": total_gross,
            "total_fee_yen": total_fee,
            "total_net_yen": total_gross - total_fee,
            "days": orjson.Fragment(b"[" + b",".join(chunks) + b"]"),
        }
    )


def _revenue_day(
    facility: str, day: date, count: int, gross: int, fee: int | None, reconciled: bool | None
) -> Row:
    return {
        "facility_code": facility,
        "day": day_text(day),
        "count": count,
        "gross_yen": gross,
        "fee_yen": fee,
        "net_yen": None if fee is None else gross - fee,
        "reconciled": reconciled,
    }


async def revenue_rows(ctx: ServiceContext, f: PaymentFilter) -> Row:
    whole_day = f.method is None and f.brand is None
    days = []
    total_gross = total_fee = 0
    # 12,410 facility-days a year: rows unpacked rather than looked up by name
    for facility, day, count, gross, day_fee, reconciled in await store.revenue_by_day(ctx.pool, f):
        fee = (day_fee or 0) if whole_day else None
        total_gross += gross
        total_fee += fee or 0
        days.append(_revenue_day(facility, day, count, gross, fee, reconciled))
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


def _revenue_csv(body: Row) -> Answer:
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
