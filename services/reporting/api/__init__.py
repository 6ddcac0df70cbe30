"""Reporting's HTTP API: one module per KPI family, each with its routes, the read queries
only it needs and the models it returns; ``deps.py`` holds the dependencies they share
(the service, the validated filters, the staff check) and ``answering.py`` how an answer is
kept and served. Errors map to HTTP in ``deps.py`` (filters) and the runtime only."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.reporting.api import (
    cashless,
    coverage,
    dashboard,
    open_data,
    operations,
    revenue,
    turnaround,
    usage,
)
from services.reporting.api.deps import caller
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters

router = APIRouter(
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route of reporting; each one identifies its caller and counts it against the
caller's rate limit. The KPIs, open data and the dashboard are public: aggregates only, no
person in them."""
for family in (usage, coverage, turnaround, cashless, revenue, open_data, operations, dashboard):
    router.include_router(family.router)
