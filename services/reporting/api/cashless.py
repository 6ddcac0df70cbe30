"""Cashless share (キャッシュレス比率): payments standing (captures less refunds and voids)
by method and brand, facility, month and day; the cashless part by count and by amount."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from typing_extensions import TypedDict

from contracts.payments import PaymentMethod
from services.reporting import domain, store
from services.reporting.answers import Answer
from services.reporting.api.answering import (
    CSV_RESPONSE,
    NOT_MODIFIED,
    PAYMENT_FAMILY,
    SHARE_DOC,
    csv_answer,
    json_answer,
    kept,
    month_text,
)
from services.reporting.api.deps import Ctx, PaymentQuery
from services.reporting.store import PaymentFilter
from services.runtime.service import ServiceContext

router = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)


class PaymentFigures(TypedDict):
    """Payments standing (captures less refunds and voids) and the cashless part of them."""

    count: int
    amount_yen: int
    cashless_count: int
    cashless_amount_yen: int
    cashless_share_by_count: Annotated[float | None, Field(description=SHARE_DOC)]
    cashless_share_by_amount: Annotated[float | None, Field(description=SHARE_DOC)]


def payment_figures(row: Any) -> PaymentFigures:
    return {
        "count": row["count"],
        "amount_yen": row["amount_yen"],
        "cashless_count": row["cashless_count"],
        "cashless_amount_yen": row["cashless_amount_yen"],
        "cashless_share_by_count": domain.share(row["cashless_count"], row["count"]),
        "cashless_share_by_amount": domain.share(row["cashless_amount_yen"], row["amount_yen"]),
    }


class MethodFigures(TypedDict):
    method: PaymentMethod
    brand: Annotated[str | None, Field(description="PayPay, 交通系IC, Visa…; null for cash.")]
    count: int
    amount_yen: int


class FacilityFigures(PaymentFigures):
    facility_code: str


class MonthFigures(PaymentFigures):
    month: Annotated[str, Field(examples=["2026-11"])]


class DayFigures(PaymentFigures):
    day: date


class CashlessShare(TypedDict):
    """Cashless share: cashless payments / all payments, by count and by amount."""

    rounding: str
    total: PaymentFigures
    by_method: list[MethodFigures]
    by_facility: list[FacilityFigures]
    by_month: list[MonthFigures]
    by_day: list[DayFigures]


@router.get(
    "/cashless-share",
    response_model=CashlessShare,
    summary="Cashless share by method and brand, facility, month and day",
    description=SHARE_DOC,
)
async def cashless_share(ctx: Ctx, request: Request, f: PaymentQuery) -> Response:
    async def build() -> Answer:
        return json_answer(await _cashless_share(ctx, f))

    return await kept(ctx, request, ("cashless-share", f), PAYMENT_FAMILY, build)


async def _cashless_share(ctx: ServiceContext, f: PaymentFilter) -> CashlessShare:
    [total], by_method, by_facility, by_month, by_day = await asyncio.gather(
        store.payments_by(ctx.pool, [], f),
        store.payments_by(ctx.pool, ["method", "brand"], f),
        store.payments_by(ctx.pool, ["facility_code"], f),
        store.payments_by(ctx.pool, ["month"], f),
        store.payments_by(ctx.pool, ["day"], f),
    )
    return {
        "rounding": domain.SHARE_ROUNDING,
        "total": payment_figures(total),
        "by_method": [
            {
                "method": r["method"],
                "brand": r["brand"] or None,
                "count": r["count"],
                "amount_yen": r["amount_yen"],
            }
            for r in by_method
        ],
        "by_facility": [
            {**payment_figures(r), "facility_code": r["facility_code"]} for r in by_facility
        ],
        "by_month": [{**payment_figures(r), "month": month_text(r["month"])} for r in by_month],
        "by_day": [{**payment_figures(r), "day": r["day"]} for r in by_day],
    }


@router.get(
    "/cashless-share.csv",
    response_class=Response,
    summary="Payments as CSV: one row per day, facility, method and brand",
    responses=CSV_RESPONSE,
)
async def cashless_share_csv(ctx: Ctx, request: Request, f: PaymentQuery) -> Response:
    async def build() -> Answer:
        return await _cashless_share_csv(ctx, f)

    return await kept(ctx, request, ("cashless-share.csv", f), PAYMENT_FAMILY, build)


async def _cashless_share_csv(ctx: ServiceContext, f: PaymentFilter) -> Answer:
    rows = await store.payments_by(ctx.pool, ["day", "facility_code", "method", "brand"], f)
    return csv_answer(
        "cashless-share",
        ["day", "facility_code", "method", "brand", "cashless", "count", "amount_yen"],
        (
            [
                r["day"].isoformat(),
                r["facility_code"],
                r["method"],
                r["brand"],
                str(r["method"] != "cash").lower(),
                r["count"],
                r["amount_yen"],
            ]
            for r in rows
        ),
    )
