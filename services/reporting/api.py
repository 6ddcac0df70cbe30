"""KPI query API: JSON per KPI, CSV exports, open data. Errors map to HTTP here only.

The queries of one response run concurrently (each on its own pooled connection). Every share
in a response is ``part / whole`` rounded half-even to 4 decimals, null when the
whole is 0 (see ``domain.share``). Months are ``YYYY-MM`` and days ``YYYY-MM-DD`` in
Asia/Tokyo; money is integer yen.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import functools
import io
import itertools
import operator
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeAlias, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field, SecretStr

from contracts.applications import ProcedureGroup
from contracts.payments import FACILITY_CODE_PATTERN, PaymentMethod
from services.reporting import answers, domain, metrics, store
from services.reporting.answers import Answer, AnswerCache, MonthParts
from services.reporting.dashboard import dashboard
from services.reporting.lag import ConsumerLag, projection_lag
from services.reporting.settings import ReportingSettings, load_reporting_settings
from services.reporting.store import ApplicationFilter, CatalogFilter, PaymentFilter, Period
from services.reporting.subscribers import BINDINGS
from services.runtime.auth import Caller, caller_dependency, require_staff
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters
from services.runtime.service import ServiceContext, service_context

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: If-None-Match named this answer's ETag (no body)."}
}
kpi = APIRouter(prefix="/kpi", tags=["kpi"], responses=NOT_MODIFIED)
open_data = APIRouter(prefix="/open-data", tags=["open data"], responses=NOT_MODIFIED)
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
DepartmentFilter = Annotated[
    str | None,
    Query(alias="department", min_length=1, max_length=100, description="Only this 部局."),
]
GroupFilter = Annotated[
    ProcedureGroup | None,
    Query(
        alias="group",
        description="Only this group: 1 本人確認不要型 (no identity check), 2 本人確認必要型.",
    ),
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


YEARS = range(2000, 2100)
"""Months a KPI query may name: the KPIs are built month by month over the period, so a
period of thousands of years (``from=0083-10``) held the database for minutes (found by
schemathesis) instead of being refused."""


def _period(from_month: str | None, to_month: str | None) -> Period:
    for name, month in (("from", from_month), ("to", to_month)):
        if month is not None and int(month[:4]) not in YEARS:  # YYYY-MM by the query pattern
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": ["query", name],
                        "msg": f"{name}: a month of {YEARS.start} to {YEARS.stop - 1}",
                        "type": "value_error",
                    }
                ],
            )
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


@functools.lru_cache(maxsize=4096)
def _day(d: date) -> str:
    """YYYY-MM-DD, remembered: a year of revenue is 12,410 rows over 365 days."""
    return d.isoformat()


@functools.lru_cache(maxsize=4096)
def _month(d: date) -> str:
    """YYYY-MM. Called per row (40,000 rows in a year of open data) with a few dozen distinct
    months: remembered, it costs a dictionary lookup instead of isoformat and a slice."""
    return d.isoformat()[:7]


Row: TypeAlias = dict[str, Any]


def _json(body: Row) -> Answer:
    """A KPI body as JSON, the way FastAPI renders a response model, without a pydantic object
    per row: a year of the city is thousands of rows (4,300 procedures, 12,000 facility-days),
    and building, validating and encoding a model for each took most of a request. The rows
    are built field for field in the order of the documented ``response_model``, which the
    tests compare exactly. orjson: the bytes ``json.dumps(ensure_ascii=False,
    separators=(",", ":"))`` gives, about 8 times faster (NaN is refused by the models'
    rounding before it gets here)."""
    return Answer(orjson.dumps(body), "application/json")


# -- answers kept per read-model version (answers.py)

APPLICATION_FAMILY = ("applications",)
"""Answers computed from the application events' read-models (usage, coverage, turnaround)."""
PAYMENT_FAMILY = ("payments",)
"""Answers computed from the payment events' read-models (cashless share, revenue)."""
BOTH_FAMILIES = ("applications", "payments")


def _answers(ctx: ServiceContext) -> AnswerCache:
    def build() -> AnswerCache:
        mb = ctx.provide(ReportingSettings, load_reporting_settings).answer_cache_mb
        return AnswerCache(mb * 2**20)

    return ctx.provide(AnswerCache, build)


def _month_parts(ctx: ServiceContext) -> MonthParts:
    def build() -> MonthParts:
        mb = ctx.provide(ReportingSettings, load_reporting_settings).answer_cache_mb
        return MonthParts(mb * 2**20)

    return ctx.provide(MonthParts, build)


_USAGE_READS = ("applications_month_procedure", "applications_by_month")
"""What usage answers for a period read (``store.applications_by`` with months), besides the
catalog."""
_TURNAROUND_READS = (
    "turnaround_monthly",
    "turnaround_by_month",
    "turnaround_histogram",
    "turnaround_month_histogram",
)
"""What turnaround answers for a period read (``store.turnaround_by`` with months), besides
the catalog."""
_CATALOG = ("procedures",)


Filter = TypeVar("Filter", ApplicationFilter, PaymentFilter)


def _in_month(f: Filter, month: date) -> Filter:
    """The filter ``f`` for one month of its period alone (a month part's rows)."""
    return dataclasses.replace(f, period=Period(month, domain.month_end(month)))


async def _kept(
    ctx: ServiceContext,
    request: Request,
    key: Hashable,
    families: Sequence[str],
    build: Callable[[], Awaitable[Answer]],
    *,
    period: Period | None = None,
    reads: Sequence[str] = (),
) -> Response:
    """The answer to ``key`` under the read-models' current versions: kept, or built now (and
    kept). The versions are read before ``build``'s queries run, so what they read is at least
    that recent (see answers.py).

    An answer for a bounded ``period`` that reads only the months of ``reads`` and the catalog
    is kept under those months' versions instead of its families' (migration 0013): a batch
    that changes other months (the current one, nearly always) leaves it as it is, one that
    changes a month of the period or the catalog makes it new. ``reads`` must name every
    table its queries read but the catalog."""
    cache = _answers(ctx)
    if period is not None and period != Period() and reads:
        versions: tuple[int, ...] = (await store.period_version(ctx.pool, reads, period, _CATALOG),)
    else:
        versions = await store.projection_versions(ctx.pool, families)
    answer = await cache.get_or_build(key, versions, build)
    return answers.respond(request, cache, key, answer)


# -- online usage rate (オンライン利用率)


class ChannelCounts(BaseModel):
    """Applications received, by channel, and the share that came online."""

    online: int
    counter: int
    mail: int
    total: int
    online_share: float | None = Field(description=SHARE_DOC)


ApplicationsByChannel = ChannelCounts


def _channels(row: Any, key: str | None = None, value: object = None) -> Row:
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


def _application_filter(
    procedure: str | None,
    department: str | None,
    group: ProcedureGroup | None,
    from_month: str | None,
    to_month: str | None,
) -> ApplicationFilter:
    return ApplicationFilter(
        procedure_code=procedure,
        period=_period(from_month, to_month),
        department=department,
        group=int(group) if group is not None else None,
    )


@kpi.get(
    "/applications/by-channel",
    response_model=ChannelCounts,
    summary="Applications by channel, all time (the first KPI)",
    description=SHARE_DOC,
)
async def applications_by_channel(ctx: Ctx, request: Request) -> Response:
    async def build() -> Answer:
        [row] = await store.applications_by(ctx.pool, [], ApplicationFilter())
        return _json(_channels(row))

    return await _kept(ctx, request, ("by-channel",), APPLICATION_FAMILY, build)


@kpi.get(
    "/online-usage",
    response_model=OnlineUsage,
    summary="Online usage rate by procedure, department and month",
    description=SHARE_DOC,
)
async def online_usage(
    ctx: Ctx,
    request: Request,
    procedure: ProcedureFilter = None,
    department: DepartmentFilter = None,
    group: GroupFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _application_filter(procedure, department, group, from_month, to_month)
    return await _kept(
        ctx,
        request,
        ("online-usage", f),
        APPLICATION_FAMILY,
        lambda: _online_usage(ctx, f),
        period=f.period,
        reads=_USAGE_READS,
    )


async def _online_usage(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
    by_catalog = f.procedure_code is None and (f.department or f.group) is not None
    [total], by_procedure, by_department, by_month = await asyncio.gather(
        store.applications_by(ctx.pool, [], f),
        store.applications_by(ctx.pool, ["procedure_code"], f),
        store.applications_by(ctx.pool, ["department"], f),
        _usage_by_month(ctx, f) if by_catalog else store.applications_by(ctx.pool, ["month"], f),
    )
    return _json(
        {
            "rounding": domain.SHARE_ROUNDING,
            "total": _channels(total),
            "by_procedure": [
                _channels(r, "procedure_code", r["procedure_code"]) for r in by_procedure
            ],
            "by_department": [_channels(r, "department", r["department"]) for r in by_department],
            "by_month": [_channels(r, "month", _month(r["month"])) for r in by_month],
        }
    )


async def _usage_by_month(ctx: ServiceContext, f: ApplicationFilter) -> list[Any]:
    """A department's or a group's usage by month (``applications_by(["month"], f)``), month
    by month: each month's sums over the catalog join (24,000 month × procedure rows for group
    2 in a year) are kept as a part under the greater of that month's version and the
    catalog's (migration 0013: from one sequence, so either changing makes a greater one), and
    only the months whose part is not kept are summed again."""
    versions, catalog = await asyncio.gather(
        store.month_versions(ctx.pool, [_USAGE_TABLE], f.period),
        store.period_version(ctx.pool, [], Period(), _CATALOG),
    )

    async def build(missing: list[date]) -> dict[date, tuple[Any, int]]:
        read = await asyncio.gather(
            *(store.applications_by(ctx.pool, ["month"], _in_month(f, m)) for m in missing)
        )  # none of its procedures that month: no row, an empty part
        return {m: (rows[0], 100) for m, rows in zip(missing, read, strict=True) if rows}

    found = await _month_parts(ctx).assemble(
        ("usage-by-month", f.department, f.group),
        {month: max(version, catalog) for month, version in versions.items()},
        build,
    )
    return [sums for sums in found.values() if sums]


@kpi.get(
    "/online-usage.csv",
    response_class=Response,
    summary="Online usage rate as CSV: one row per month and procedure",
    responses={200: {"content": {"text/csv": {}}}},
)
async def online_usage_csv(
    ctx: Ctx,
    request: Request,
    procedure: ProcedureFilter = None,
    department: DepartmentFilter = None,
    group: GroupFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _application_filter(procedure, department, group, from_month, to_month)
    return await _kept(
        ctx,
        request,
        ("online-usage.csv", f),
        APPLICATION_FAMILY,
        lambda: _online_usage_csv(ctx, f),
        period=f.period,
        reads=_USAGE_READS,
    )


async def _online_usage_csv(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
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


# -- online procedure coverage (手続数ベースのオンライン化率)


class CoverageFigures(BaseModel):
    online: int = Field(description="Procedures that can be done online.")
    procedures: int = Field(description="Procedures in the catalog.")
    coverage_share: float | None = Field(description=SHARE_DOC)


def _coverage(row: Any, key: str | None = None, value: object = None) -> Row:
    """CoverageFigures of a row; ``key``: one more field, after them (the row's own key)."""
    out = {
        "online": row["online"],
        "procedures": row["procedures"],
        "coverage_share": domain.share(row["online"], row["procedures"]),
    }
    if key is not None:  # the row's own key, last (the response model's order)
        out[key] = value
    return out


class GroupCoverage(CoverageFigures):
    group: ProcedureGroup


class DepartmentCoverage(CoverageFigures):
    department: str


class MonthCoverage(CoverageFigures):
    """Online by the end of ``month`` (actual) beside the roadmap (planned)."""

    month: str = Field(examples=["2027-06"])
    planned: int = Field(description="Procedures planned to be online by the end of the month.")
    planned_share: float | None = Field(description=SHARE_DOC)


class OnlineCoverage(BaseModel):
    """Online procedure coverage (手続数ベース): procedures online / all procedures."""

    rounding: str = domain.SHARE_ROUNDING
    total: CoverageFigures
    by_group: list[GroupCoverage]
    by_department: list[DepartmentCoverage]
    by_month: list[MonthCoverage]


@kpi.get(
    "/online-coverage",
    response_model=OnlineCoverage,
    summary="Online procedure coverage by group and department; monthly, planned vs actual",
    description=SHARE_DOC + " The monthly series runs from `from` (default: the first month "
    "a procedure went or was planned to go online) to `to` (default: this month in Tokyo); "
    "the denominator is the catalog as it is now.",
)
async def online_coverage(
    ctx: Ctx,
    request: Request,
    department: DepartmentFilter = None,
    group: GroupFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f, period, last = _coverage_filter(department, group, from_month, to_month)

    async def build() -> Answer:
        return _json(await _online_coverage(ctx, f, period, last))

    return await _kept(
        ctx, request, ("online-coverage", f, period, last), APPLICATION_FAMILY, build
    )


def _coverage_filter(
    department: str | None,
    group: ProcedureGroup | None,
    from_month: str | None,
    to_month: str | None,
) -> tuple[CatalogFilter, Period, date]:
    """The catalog filter, the period and the series' last month (this month in Tokyo
    unless ``to`` is given: part of a kept answer's key, so a new month is a new answer)."""
    f = CatalogFilter(department, int(group) if group is not None else None)
    period = _period(from_month, to_month)
    last = domain.parse_month(to_month) if to_month else domain.tokyo_month(datetime.now(UTC))
    return f, period, last


async def _online_coverage(
    ctx: ServiceContext, f: CatalogFilter, period: Period, last: date
) -> Row:
    [total], by_group, by_department, by_month = await asyncio.gather(
        store.coverage_by(ctx.pool, [], f),
        store.coverage_by(ctx.pool, ["procedure_group"], f),
        store.coverage_by(ctx.pool, ["department"], f),
        store.coverage_series(ctx.pool, f, period.since, last),
    )
    return {
        "rounding": domain.SHARE_ROUNDING,
        "total": _coverage(total),
        "by_group": [_coverage(r, "group", r["procedure_group"]) for r in by_group],
        "by_department": [_coverage(r, "department", r["department"]) for r in by_department],
        "by_month": [
            {
                **_coverage(r),
                "month": _month(r["month"]),
                "planned": r["planned"],
                "planned_share": domain.share(r["planned"], r["procedures"]),
            }
            for r in by_month
        ],
    }


@kpi.get(
    "/online-coverage.csv",
    response_class=Response,
    summary="Online procedure coverage as CSV: one row per month, planned beside actual",
    responses={200: {"content": {"text/csv": {}}}},
)
async def online_coverage_csv(
    ctx: Ctx,
    request: Request,
    department: DepartmentFilter = None,
    group: GroupFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f, period, last = _coverage_filter(department, group, from_month, to_month)

    async def build() -> Answer:
        return _online_coverage_csv(await _online_coverage(ctx, f, period, last))

    return await _kept(
        ctx, request, ("online-coverage.csv", f, period, last), APPLICATION_FAMILY, build
    )


def _online_coverage_csv(body: Row) -> Answer:
    return _csv(
        "online-coverage",
        ["month", "online", "planned", "procedures", "coverage_share", "planned_share"],
        (
            [
                m["month"],
                m["online"],
                m["planned"],
                m["procedures"],
                _share_text(m["coverage_share"]),
                _share_text(m["planned_share"]),
            ]
            for m in body["by_month"]
        ),
    )


# -- certificate turnaround (交付までの時間) and completion rate


class TurnaroundFigures(BaseModel):
    """Applications submitted, completed (certificate issued or approved), closed otherwise
    (rejected, withdrawn), and the time from submission to certificate."""

    submitted: int
    completed: int
    closed_without_completion: int
    completion_rate: float | None = Field(description="completed / submitted. " + SHARE_DOC)
    certificates_issued: int
    median_seconds: float | None = Field(
        description="Median submitted -> certificate issued (interpolated), 1 decimal."
    )
    p90_seconds: float | None = Field(
        description="90th percentile submitted -> certificate issued (interpolated), 1 decimal."
    )


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _turnaround(row: Any, key: str | None = None, value: object = None) -> Row:
    """TurnaroundFigures of a row; ``key``: one more field, after them (the row's own key)."""
    out = {
        "submitted": row["submitted"],
        "completed": row["completed"],
        "closed_without_completion": row["closed"],
        "completion_rate": domain.share(row["completed"], row["submitted"]),
        "certificates_issued": row["certificates_issued"],
        "median_seconds": _seconds(row["median_seconds"]),
        "p90_seconds": _seconds(row["p90_seconds"]),
    }
    if key is not None:  # the row's own key, last (the response model's order)
        out[key] = value
    return out


class ProcedureTurnaround(TurnaroundFigures):
    procedure_code: str


class MonthTurnaround(TurnaroundFigures):
    month: str = Field(description="Month of submission (Asia/Tokyo).", examples=["2026-11"])


class CertificateTurnaround(BaseModel):
    """Certificate turnaround and completion rate, by procedure and month of submission."""

    rounding: str = domain.SHARE_ROUNDING
    total: TurnaroundFigures
    by_procedure: list[ProcedureTurnaround]
    by_month: list[MonthTurnaround]


@kpi.get(
    "/certificate-turnaround",
    response_model=CertificateTurnaround,
    summary="Certificate turnaround (median, p90) and completion rate by procedure and month",
    description=SHARE_DOC,
)
async def certificate_turnaround(
    ctx: Ctx,
    request: Request,
    procedure: ProcedureFilter = None,
    department: DepartmentFilter = None,
    group: GroupFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _application_filter(procedure, department, group, from_month, to_month)
    return await _kept(
        ctx,
        request,
        ("certificate-turnaround", f),
        APPLICATION_FAMILY,
        lambda: _certificate_turnaround(ctx, f),
        period=f.period,
        reads=_TURNAROUND_READS,
    )


async def _certificate_turnaround(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
    [total], by_procedure, by_month = await asyncio.gather(
        store.turnaround_by(ctx.pool, [], f),
        store.turnaround_by(ctx.pool, ["procedure_code"], f),
        store.turnaround_by(ctx.pool, ["month"], f),
    )
    return _json(
        {
            "rounding": domain.SHARE_ROUNDING,
            "total": _turnaround(total),
            "by_procedure": [
                _turnaround(r, "procedure_code", r["procedure_code"]) for r in by_procedure
            ],
            "by_month": [_turnaround(r, "month", _month(r["month"])) for r in by_month],
        }
    )


@kpi.get(
    "/certificate-turnaround.csv",
    response_class=Response,
    summary="Turnaround and completion as CSV: one row per month and procedure",
    responses={200: {"content": {"text/csv": {}}}},
)
async def certificate_turnaround_csv(
    ctx: Ctx,
    request: Request,
    procedure: ProcedureFilter = None,
    department: DepartmentFilter = None,
    group: GroupFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _application_filter(procedure, department, group, from_month, to_month)
    return await _kept(
        ctx,
        request,
        ("certificate-turnaround.csv", f),
        APPLICATION_FAMILY,
        lambda: _certificate_turnaround_csv(ctx, f),
        period=f.period,
        reads=_TURNAROUND_READS,
    )


async def _certificate_turnaround_csv(ctx: ServiceContext, f: ApplicationFilter) -> Answer:
    rows = await store.turnaround_by(ctx.pool, ["month", "procedure_code"], f)
    header = [
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
    share, seconds = domain.share, _seconds
    out = []
    for r in rows:  # 4,300 a month: written straight from the row (the figures of _turnaround)
        submitted, completed = r["submitted"], r["completed"]
        median, p90 = r["median_seconds"], r["p90_seconds"]
        out.append(
            [
                _month(r["month"]),
                r["procedure_code"],
                submitted,
                completed,
                r["closed"],
                _share_text(share(completed, submitted)),
                r["certificates_issued"],
                "" if median is None else seconds(median),
                "" if p90 is None else seconds(p90),
            ]
        )
    return _csv("certificate-turnaround", header, out)


# -- cashless share (キャッシュレス比率)


class PaymentFigures(BaseModel):
    """Payments standing (captures less refunds and voids) and the cashless part of them."""

    count: int
    amount_yen: int
    cashless_count: int
    cashless_amount_yen: int
    cashless_share_by_count: float | None = Field(description=SHARE_DOC)
    cashless_share_by_amount: float | None = Field(description=SHARE_DOC)


def _payments(row: Any, key: str | None = None, value: object = None) -> Row:
    """PaymentFigures of a row; ``key``: one more field, after them (the row's own key)."""
    out = {
        "count": row["count"],
        "amount_yen": row["amount_yen"],
        "cashless_count": row["cashless_count"],
        "cashless_amount_yen": row["cashless_amount_yen"],
        "cashless_share_by_count": domain.share(row["cashless_count"], row["count"]),
        "cashless_share_by_amount": domain.share(row["cashless_amount_yen"], row["amount_yen"]),
    }
    if key is not None:  # the row's own key, last (the response model's order)
        out[key] = value
    return out


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
    request: Request,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _payment_filter(facility, method, brand, from_month, to_month)
    return await _kept(
        ctx, request, ("cashless-share", f), PAYMENT_FAMILY, lambda: _cashless_share(ctx, f)
    )


async def _cashless_share(ctx: ServiceContext, f: PaymentFilter) -> Answer:
    [total], by_method, by_facility, by_month, by_day = await asyncio.gather(
        store.payments_by(ctx.pool, [], f),
        store.payments_by(ctx.pool, ["method", "brand"], f),
        store.payments_by(ctx.pool, ["facility_code"], f),
        store.payments_by(ctx.pool, ["month"], f),
        store.payments_by(ctx.pool, ["day"], f),
    )
    return _json(
        {
            "rounding": domain.SHARE_ROUNDING,
            "total": _payments(total),
            "by_method": [
                {
                    "method": r["method"],
                    "brand": r["brand"] or None,
                    "count": r["count"],
                    "amount_yen": r["amount_yen"],
                }
                for r in by_method
            ],
            "by_facility": [_payments(r, "facility_code", r["facility_code"]) for r in by_facility],
            "by_month": [_payments(r, "month", _month(r["month"])) for r in by_month],
            "by_day": [_payments(r, "day", r["day"].isoformat()) for r in by_day],
        }
    )


@kpi.get(
    "/cashless-share.csv",
    response_class=Response,
    summary="Payments as CSV: one row per day, facility, method and brand",
    responses={200: {"content": {"text/csv": {}}}},
)
async def cashless_share_csv(
    ctx: Ctx,
    request: Request,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _payment_filter(facility, method, brand, from_month, to_month)
    return await _kept(
        ctx,
        request,
        ("cashless-share.csv", f),
        PAYMENT_FAMILY,
        lambda: _cashless_share_csv(ctx, f),
    )


async def _cashless_share_csv(ctx: ServiceContext, f: PaymentFilter) -> Answer:
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


@kpi.get(
    "/revenue",
    response_model=Revenue,
    summary="Revenue by facility and day (gross: captures less refunds and voids)",
)
async def revenue(
    ctx: Ctx,
    request: Request,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _payment_filter(facility, method, brand, from_month, to_month)

    async def build() -> Answer:
        if f.method is None and f.brand is None:
            return await _revenue_by_months(ctx, f)
        return _json(await _revenue(ctx, f))

    return await _kept(ctx, request, ("revenue", f), PAYMENT_FAMILY, build)


_REVENUE_TABLES = ("payments_facility_days", "settlements")

_RevenueMonth: TypeAlias = dict[str, tuple[bytes, int, int]]
"""A month of revenue as kept: per facility, its days' JSON (an array without its brackets),
gross and fees."""


async def _revenue_by_months(ctx: ServiceContext, f: PaymentFilter) -> Answer:
    """``/kpi/revenue`` without a method or brand, month by month: the months whose
    facility-days or settlements changed since they were encoded are read and encoded again,
    the others' are reused (``answers.MonthParts``), and the facilities' days are joined in
    the answer's order (facility, then day). The same bytes as ``_revenue``'s answer."""
    versions = await store.month_versions(ctx.pool, _REVENUE_TABLES, f.period)

    async def build(missing: list[date]) -> dict[date, tuple[_RevenueMonth, int]]:
        read = await asyncio.gather(
            *(store.revenue_by_day(ctx.pool, _in_month(f, m)) for m in missing)
        )
        built = {}
        for month, rows in zip(missing, read, strict=True):
            facilities: _RevenueMonth = {}
            for facility, group in itertools.groupby(rows, key=_first):
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

    months: dict[date, _RevenueMonth] = await _month_parts(ctx).assemble(
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
    return _json(
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
        "day": _day(day),
        "count": count,
        "gross_yen": gross,
        "fee_yen": fee,
        "net_yen": None if fee is None else gross - fee,
        "reconciled": reconciled,
    }


async def _revenue(ctx: ServiceContext, f: PaymentFilter) -> Row:
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


@kpi.get(
    "/revenue.csv",
    response_class=Response,
    summary="Revenue as CSV: one row per facility and day",
    responses={200: {"content": {"text/csv": {}}}},
)
async def revenue_csv(
    ctx: Ctx,
    request: Request,
    facility: FacilityFilter = None,
    method: MethodFilter = None,
    brand: BrandFilter = None,
    from_month: FromMonth = None,
    to_month: ToMonth = None,
) -> Response:
    f = _payment_filter(facility, method, brand, from_month, to_month)

    async def build() -> Answer:
        return _revenue_csv(await _revenue(ctx, f))

    return await _kept(ctx, request, ("revenue.csv", f), PAYMENT_FAMILY, build)


def _revenue_csv(body: Row) -> Answer:
    return _csv(
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
    generated_at: datetime = Field(
        description="When these figures were computed: an answer is kept, and served again "
        "as it is, until the next event changes the read-models."
    )
    rounding: str = domain.SHARE_ROUNDING
    online_usage: list[OpenUsageMonth]
    cashless_share: list[OpenCashlessMonth]
    online_coverage_by_department: list[DepartmentCoverage]
    completion_by_month: list[MonthTurnaround]


@open_data.get(
    "/kpi",
    response_model=OpenData,
    summary="Open data: monthly KPI figures, aggregated only (no ids, no times, no people)",
    description=SHARE_DOC,
)
async def open_kpi(
    ctx: Ctx, request: Request, from_month: FromMonth = None, to_month: ToMonth = None
) -> Response:
    period = _period(from_month, to_month)
    return await _kept(
        ctx, request, ("open-data", period), BOTH_FAMILIES, lambda: _open_kpi(ctx, period)
    )


async def _open_kpi(ctx: ServiceContext, period: Period) -> Answer:
    usage, cashless, departments, completion = await asyncio.gather(
        _open_usage(ctx, period),
        _open_cashless(ctx, period),
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
                _coverage(r, "department", r["department"]) for r in departments
            ],
            "completion_by_month": [
                _turnaround(r, "month", _month(r["month"])) for r in completion
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


_USAGE_TABLE = "applications_month_procedure"


async def _open_usage(ctx: ServiceContext, period: Period) -> list[answers.Chunk]:
    """Open data's online usage by month and procedure (40,000 rows a year), in month
    chunks (``_month_chunks``)."""
    return await _month_chunks(ctx, period, _USAGE_TABLE, store.usage_of_months, _usage_rows)


def _usage_rows(month: date, rows: Iterable[Any]) -> list[Row]:
    share = domain.share
    return [  # unpacked rather than looked up by name
        {
            "month": _month(month),
            "procedure_code": code,
            "online": online,
            "total": total,
            "online_share": share(online, total),
        }
        for _month_of, code, online, _counter, _mail, total in rows
    ]


_CASHLESS_TABLE = "payments_facility_days"


async def _open_cashless(ctx: ServiceContext, period: Period) -> list[answers.Chunk]:
    """Open data's cashless share by month and facility, in month chunks of the
    facility-days (``_month_chunks``)."""
    return await _month_chunks(
        ctx, period, _CASHLESS_TABLE, store.cashless_of_months, _cashless_rows
    )


def _cashless_rows(month: date, rows: Iterable[Any]) -> list[Row]:
    share = domain.share
    return [
        {
            "month": _month(month),
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
        for month, group in itertools.groupby(await read(ctx.pool, missing), key=_first):
            part = orjson.dumps(encode(month, group))[1:-1]
            # counted with its deflate stream, made when first sent gzipped (about 8 %)
            built[month] = (answers.Chunk(part), len(part) + len(part) // 8)
        return built

    parts = await _month_parts(ctx).assemble(table, versions, build)
    return [p for p in parts.values() if p]


_first = operator.itemgetter(0)
"""A row's first column: what the month and revenue builders group their rows by."""


def _share_text(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _csv(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Answer:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Answer(
        out.getvalue().encode(),
        "text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


# -- operations (operators only: REPORTING_STAFF_TOKENS)


def _staff_tokens(ctx: ServiceContext) -> Mapping[str, SecretStr]:
    return ctx.provide(ReportingSettings, load_reporting_settings).staff_tokens


caller = caller_dependency(_staff_tokens)


async def _staff(who: Annotated[Caller, Depends(caller)]) -> Caller:
    return require_staff(who)


operations = APIRouter(tags=["operations"], dependencies=[Depends(_staff)])


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
    async def build() -> Answer:
        return Answer(await metrics.kpi_exposition(ctx.pool), metrics.CONTENT_TYPE)

    cache = _answers(ctx)
    versions = await store.projection_versions(ctx.pool, BOTH_FAMILIES)
    kpis, lags = await asyncio.gather(
        cache.get_or_build(("metrics",), versions, build),
        projection_lag(ctx.js, ctx.settings.namespace, BINDINGS),
    )
    return Response(kpis.body + metrics.lag_exposition(lags), media_type=metrics.CONTENT_TYPE)


router = APIRouter(
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route of reporting (included last, once the routes above are declared); each one
identifies its caller and counts it against the caller's rate limit. The KPIs, open data and
the dashboard are public: aggregates only, no person in them."""
router.include_router(kpi)
router.include_router(open_data)
router.include_router(operations)
router.include_router(dashboard)
