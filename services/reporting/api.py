"""KPI query API: JSON per KPI, CSV exports, open data. Errors map to HTTP here only.

Every share in a response is ``part / whole`` rounded half-even to 4 decimals, null when the
whole is 0 (see ``domain.share``). Months are ``YYYY-MM`` and days ``YYYY-MM-DD`` in
Asia/Tokyo; money is integer yen.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from contracts.payments import FACILITY_CODE_PATTERN, PaymentMethod
from services.reporting import domain, metrics, store
from services.reporting.dashboard import dashboard
from services.reporting.lag import ConsumerLag, projection_lag
from services.reporting.store import ApplicationFilter, PaymentFilter, Period
from services.reporting.subscribers import BINDINGS
from services.runtime.service import ServiceContext, service_context

kpi = APIRouter(prefix="/kpi", tags=["kpi"])
open_data = APIRouter(prefix="/open-data", tags=["open data"])
Ctx = Annotated[ServiceContext, Depends(service_context)]

KORIYAMA_CODE = "072036"
"""全国地方公共団体コード of Koriyama."""

SHARE_DOC = f"Shares: {domain.SHARE_ROUNDING}."

# -- filters ------------------------------------------------------------------------------------

FromMonth = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=domain.MONTH_PATTERN,
        description="First month included, YYYY-MM (Asia/Tokyo).",
        examples=["2026-04"],
    ),
]
ToMonth = Annotated[
    str | None,
    Query(
        alias="to",
        pattern=domain.MONTH_PATTERN,
        description="Last month included, YYYY-MM (Asia/Tokyo).",
        examples=["2027-03"],
    ),
]
ProcedureFilter = Annotated[
    str | None,
    Query(alias="procedure", max_length=32, description="Only this procedure code."),
]
FacilityFilter = Annotated[
    str | None,
    Query(alias="facility", pattern=FACILITY_CODE_PATTERN, description="Only this facility."),
]
MethodFilter = Annotated[
    PaymentMethod | None, Query(alias="method", description="Only this payment method.")
]
BrandFilter = Annotated[
    str | None,
    Query(alias="brand", min_length=1, max_length=40, description="Only this brand (PayPay…)."),
]


def _period(from_month: str | None, to_month: str | None) -> Period:
    since = domain.parse_month(from_month) if from_month else None
    last = domain.parse_month(to_month) if to_month else None
    if since and last and last < since:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["query", "to"],
                    "msg": f"to ({to_month}) is before from ({from_month})",
                    "type": "value_error",
                }
            ],
        )
    return Period(since, domain.month_end(last) if last else None)


def _month(d: date) -> str:
    return d.strftime("%Y-%m")


# -- online usage rate (オンライン利用率)


class ChannelCounts(BaseModel):
    """Applications received, by channel, and the share that came online."""

    online: int
    counter: int
    mail: int
    total: int
    online_share: float | None = Field(description=SHARE_DOC)

    @classmethod
    def of(cls, row: Any) -> ChannelCounts:
        return cls(
            online=row["online"],
            counter=row["counter"],
            mail=row["mail"],
            total=row["total"],
            online_share=domain.share(row["online"], row["total"]),
        )


ApplicationsByChannel = ChannelCounts


class ProcedureUsage(ChannelCounts):
    procedure_code: str


class MonthUsage(ChannelCounts):
    month: str = Field(examples=["2026-11"])


class OnlineUsage(BaseModel):
    """Online usage rate (件数ベース, digital take-up): applications that came online / all."""

    rounding: str = domain.SHARE_ROUNDING
    total: ChannelCounts
    by_procedure: list[ProcedureUsage]
    by_month: list[MonthUsage]


@kpi.get(
    "/applications/by-channel",
    response_model=ChannelCounts,
    summary="Applications by channel, all time (the first KPI)",
    description=SHARE_DOC,
)
async def applications_by_channel(ctx: Ctx) -> ChannelCounts:
    [row] = await store.applications_by(ctx.pool, [], ApplicationFilter())
    return ChannelCounts.of(row)


@kpi.get(
    "/online-usage",
    response_model=OnlineUsage,
    summary="Online usage rate by procedure and month",
    description=SHARE_DOC,
)
async def online_usage(
    ctx: Ctx,
    procedure: ProcedureFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> OnlineUsage:
    f = ApplicationFilter(procedure, _period(from_month, to_month))
    [total] = await store.applications_by(ctx.pool, [], f)
    by_procedure = await store.applications_by(ctx.pool, ["procedure_code"], f)
    by_month = await store.applications_by(ctx.pool, ["month"], f)
    return OnlineUsage(
        total=ChannelCounts.of(total),
        by_procedure=[
            ProcedureUsage(procedure_code=r["procedure_code"], **ChannelCounts.of(r).model_dump())
            for r in by_procedure
        ],
        by_month=[
            MonthUsage(month=_month(r["month"]), **ChannelCounts.of(r).model_dump())
            for r in by_month
        ],
    )


@kpi.get(
    "/online-usage.csv",
    response_class=Response,
    summary="Online usage rate as CSV: one row per month and procedure",
    responses={200: {"content": {"text/csv": {}}}},
)
async def online_usage_csv(
    ctx: Ctx,
    procedure: ProcedureFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = ApplicationFilter(procedure, _period(from_month, to_month))
    rows = await store.applications_by(ctx.pool, ["month", "procedure_code"], f)
    return _csv(
        "online-usage",
        ["month", "procedure_code", "online", "counter", "mail", "total", "online_share"],
        (
            [
                _month(r["month"]),
                r["procedure_code"],
                r["online"],
                r["counter"],
                r["mail"],
                r["total"],
                _share_text(domain.share(r["online"], r["total"])),
            ]
            for r in rows
        ),
    )


# -- cashless share (キャッシュレス比率)


class PaymentFigures(BaseModel):
    """Payments standing (captures less refunds and voids) and the cashless part of them."""

    count: int
    amount_yen: int
    cashless_count: int
    cashless_amount_yen: int
    cashless_share_by_count: float | None = Field(description=SHARE_DOC)
    cashless_share_by_amount: float | None = Field(description=SHARE_DOC)

    @classmethod
    def of(cls, row: Any) -> PaymentFigures:
        return cls(
            count=row["count"],
            amount_yen=row["amount_yen"],
            cashless_count=row["cashless_count"],
            cashless_amount_yen=row["cashless_amount_yen"],
            cashless_share_by_count=domain.share(row["cashless_count"], row["count"]),
            cashless_share_by_amount=domain.share(row["cashless_amount_yen"], row["amount_yen"]),
        )


class MethodFigures(BaseModel):
    method: PaymentMethod
    brand: str | None = Field(description="PayPay, 交通系IC, Visa…; null for cash.")
    count: int
    amount_yen: int


class FacilityFigures(PaymentFigures):
    facility_code: str


class MonthFigures(PaymentFigures):
    month: str = Field(examples=["2026-11"])


class DayFigures(PaymentFigures):
    day: date


class CashlessShare(BaseModel):
    """Cashless share: cashless payments / all payments, by count and by amount."""

    rounding: str = domain.SHARE_ROUNDING
    total: PaymentFigures
    by_method: list[MethodFigures]
    by_facility: list[FacilityFigures]
    by_month: list[MonthFigures]
    by_day: list[DayFigures]


def _payment_filter(
    facility: str | None,
    method: PaymentMethod | None,
    brand: str | None,
    from_month: str | None,
    to_month: str | None,
) -> PaymentFilter:
    return PaymentFilter(
        facility_code=facility,
        method=method.value if method else None,
        brand=brand,
        period=_period(from_month, to_month),
    )


@kpi.get(
    "/cashless-share",
    response_model=CashlessShare,
    summary="Cashless share by method and brand, facility, month and day",
    description=SHARE_DOC,
)
async def cashless_share(
    ctx: Ctx,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> CashlessShare:
    f = _payment_filter(facility, method, brand, from_month, to_month)
    [total] = await store.payments_by(ctx.pool, [], f)
    return CashlessShare(
        total=PaymentFigures.of(total),
        by_method=[
            MethodFigures(
                method=PaymentMethod(r["method"]),
                brand=r["brand"] or None,
                count=r["count"],
                amount_yen=r["amount_yen"],
            )
            for r in await store.payments_by(ctx.pool, ["method", "brand"], f)
        ],
        by_facility=[
            FacilityFigures(facility_code=r["facility_code"], **PaymentFigures.of(r).model_dump())
            for r in await store.payments_by(ctx.pool, ["facility_code"], f)
        ],
        by_month=[
            MonthFigures(month=_month(r["month"]), **PaymentFigures.of(r).model_dump())
            for r in await store.payments_by(ctx.pool, ["month"], f)
        ],
        by_day=[
            DayFigures(day=r["day"], **PaymentFigures.of(r).model_dump())
            for r in await store.payments_by(ctx.pool, ["day"], f)
        ],
    )


@kpi.get(
    "/cashless-share.csv",
    response_class=Response,
    summary="Payments as CSV: one row per day, facility, method and brand",
    responses={200: {"content": {"text/csv": {}}}},
)
async def cashless_share_csv(
    ctx: Ctx,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _payment_filter(facility, method, brand, from_month, to_month)
    rows = await store.payments_by(ctx.pool, ["day", "facility_code", "method", "brand"], f)
    return _csv(
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


# -- revenue (歳入) by facility and day ------------------------------------------------------------


class RevenueDay(BaseModel):
    """Revenue of one facility on one day, recorded gross (a 300-yen fee is 300 yen)."""

    facility_code: str
    day: date
    count: int
    gross_yen: int


class Revenue(BaseModel):
    total_gross_yen: int
    days: list[RevenueDay]


@kpi.get(
    "/revenue",
    response_model=Revenue,
    summary="Revenue by facility and day (gross: captures less refunds and voids)",
)
async def revenue(
    ctx: Ctx,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Revenue:
    f = _payment_filter(facility, method, brand, from_month, to_month)
    rows = await store.payments_by(ctx.pool, ["facility_code", "day"], f)
    days = [
        RevenueDay(
            facility_code=r["facility_code"],
            day=r["day"],
            count=r["count"],
            gross_yen=r["amount_yen"],
        )
        for r in rows
    ]
    return Revenue(total_gross_yen=sum(d.gross_yen for d in days), days=days)


@kpi.get(
    "/revenue.csv",
    response_class=Response,
    summary="Revenue as CSV: one row per facility and day",
    responses={200: {"content": {"text/csv": {}}}},
)
async def revenue_csv(
    ctx: Ctx,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    body = await revenue(ctx, facility, method, brand, from_month, to_month)
    return _csv(
        "revenue",
        ["facility_code", "day", "count", "gross_yen"],
        ([d.facility_code, d.day.isoformat(), d.count, d.gross_yen] for d in body.days),
    )


# -- open data (オープンデータ)


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
    generated_at: datetime
    rounding: str = domain.SHARE_ROUNDING
    online_usage: list[OpenUsageMonth]
    cashless_share: list[OpenCashlessMonth]


@open_data.get(
    "/kpi",
    response_model=OpenData,
    summary="Open data: monthly KPI figures, aggregated only (no ids, no times, no people)",
    description=SHARE_DOC,
)
async def open_kpi(ctx: Ctx, from_month: FromMonth = None, to_month: ToMonth = None) -> OpenData:
    period = _period(from_month, to_month)
    usage = await store.applications_by(
        ctx.pool, ["month", "procedure_code"], ApplicationFilter(period=period)
    )
    pays = await store.payments_by(
        ctx.pool, ["month", "facility_code"], PaymentFilter(period=period)
    )
    return OpenData(
        generated_at=datetime.now(UTC),
        online_usage=[
            OpenUsageMonth(
                month=_month(r["month"]),
                procedure_code=r["procedure_code"],
                online=r["online"],
                total=r["total"],
                online_share=domain.share(r["online"], r["total"]),
            )
            for r in usage
        ],
        cashless_share=[
            OpenCashlessMonth(
                month=_month(r["month"]),
                facility_code=r["facility_code"],
                **PaymentFigures.of(r).model_dump(),
            )
            for r in pays
        ],
    )


def _share_text(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _csv(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


# -- operations

operations = APIRouter(tags=["operations"])


@operations.get(
    "/projection/lag",
    response_model=list[ConsumerLag],
    summary="How far each projection is behind its stream (events and seconds)",
)
async def lag(ctx: Ctx) -> list[ConsumerLag]:
    return await projection_lag(ctx.js, ctx.settings.namespace, BINDINGS)


@operations.get(
    "/metrics",
    response_class=Response,
    summary="OpenMetrics: KPI gauges and the projection lag, for Prometheus",
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}}},
)
async def openmetrics(ctx: Ctx) -> Response:
    lags = await projection_lag(ctx.js, ctx.settings.namespace, BINDINGS)
    return Response(await metrics.exposition(ctx.pool, lags), media_type=metrics.CONTENT_TYPE)


router = APIRouter()
"""Every route of reporting (included last, once the routes above are declared)."""
router.include_router(kpi)
router.include_router(open_data)
router.include_router(operations)
router.include_router(dashboard)
