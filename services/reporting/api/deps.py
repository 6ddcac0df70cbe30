"""The dependencies reporting's routes share (``Annotated``, as fastapi's full-stack template's
``deps.py``): the running service, the validated filters of each KPI family, the staff check.

A filter is parsed once here into the store's filter type, so a route receives what its
queries take; a malformed value is a 422 naming the query field.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Query, status

from contracts.applications import ProcedureGroup
from contracts.payments import FACILITY_CODE_PATTERN, PaymentMethod
from services.reporting import domain
from services.reporting.store import ApplicationFilter, CatalogFilter, PaymentFilter, Period
from services.runtime import auth
from services.runtime.service import ServiceContext, service_context

Ctx = Annotated[ServiceContext, Depends(service_context)]

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
ProcedureParam = Annotated[
    str | None,
    Query(alias="procedure", max_length=32, description="Only this procedure code."),
]
DepartmentParam = Annotated[
    str | None,
    Query(alias="department", min_length=1, max_length=100, description="Only this 部局."),
]
GroupParam = Annotated[
    ProcedureGroup | None,
    Query(
        alias="group",
        description="Only this group: 1 本人確認不要型 (no identity check), 2 本人確認必要型.",
    ),
]
FacilityParam = Annotated[
    str | None,
    Query(alias="facility", pattern=FACILITY_CODE_PATTERN, description="Only this facility."),
]
MethodParam = Annotated[
    PaymentMethod | None, Query(alias="method", description="Only this payment method.")
]
BrandParam = Annotated[
    str | None,
    Query(alias="brand", min_length=1, max_length=40, description="Only this brand (PayPay…)."),
]


YEARS = range(2000, 2100)
"""Months a KPI query may name: the KPIs are built month by month over the period, so a
period of thousands of years (``from=0083-10``) held the database for minutes (found by
schemathesis) instead of being refused."""


def _invalid(field: str, msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", field], "msg": msg, "type": "value_error"}],
    )


def period(from_month: FromMonth = None, to_month: ToMonth = None) -> Period:
    """The months ``from`` to ``to``, both included."""
    for name, month in (("from", from_month), ("to", to_month)):
        if month is not None and int(month[:4]) not in YEARS:  # YYYY-MM by the query pattern
            raise _invalid(name, f"{name}: a month of {YEARS.start} to {YEARS.stop - 1}")
    since = domain.parse_month(from_month) if from_month else None
    last = domain.parse_month(to_month) if to_month else None
    if since and last and last < since:
        raise _invalid("to", f"to ({to_month}) is before from ({from_month})")
    return Period(since, domain.month_end(last) if last else None)


PeriodQuery = Annotated[Period, Depends(period)]


def application_filter(
    months: PeriodQuery,
    procedure: ProcedureParam = None,
    department: DepartmentParam = None,
    group: GroupParam = None,
) -> ApplicationFilter:
    return ApplicationFilter(
        procedure_code=procedure,
        period=months,
        department=department,
        group=int(group) if group is not None else None,
    )


ApplicationQuery = Annotated[ApplicationFilter, Depends(application_filter)]


class CoverageFilter(NamedTuple):
    """The catalog filter, the period and the series' last month (this month in Tokyo unless
    ``to`` is given: part of a kept answer's key, so a new month is a new answer)."""

    catalog: CatalogFilter
    period: Period
    last: date


def coverage_filter(
    months: PeriodQuery, department: DepartmentParam = None, group: GroupParam = None
) -> CoverageFilter:
    if months.until is not None:  # the first day after ``to``: its month is ``to``
        last = (months.until - timedelta(days=1)).replace(day=1)
    else:
        last = domain.tokyo_month(datetime.now(UTC))
    return CoverageFilter(
        CatalogFilter(department, int(group) if group is not None else None), months, last
    )


CoverageQuery = Annotated[CoverageFilter, Depends(coverage_filter)]


def payment_filter(
    months: PeriodQuery,
    facility: FacilityParam = None,
    method: MethodParam = None,
    brand: BrandParam = None,
) -> PaymentFilter:
    return PaymentFilter(
        facility_code=facility,
        method=method.value if method else None,
        brand=brand,
        period=months,
    )


PaymentQuery = Annotated[PaymentFilter, Depends(payment_filter)]


# -- the caller: the runtime's one staff-credential dependency (REPORTING_STAFF_TOKENS)

caller = auth.caller
"""Who is calling (every route: the rate limit counts per caller)."""
staff = auth.staff_only
"""Operators only."""
