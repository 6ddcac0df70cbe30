"""Composition root of the reporting service."""

from __future__ import annotations

from services.reporting.api import router
from services.reporting.settings import load_reporting_settings
from services.reporting.subscribers import APPLICATION_EVENTS, PAYMENT_EVENTS, consumers
from services.runtime.auth import load_staff_credentials
from services.runtime.service import BusAccess, ServiceDefinition

DEFINITION = ServiceDefinition(
    name="reporting",
    package="services.reporting",
    router=router,
    consumers=consumers,
    # A read-only projector: the business events it projects, nothing else (no terminals).
    bus=BusAccess(durables=(APPLICATION_EVENTS, PAYMENT_EVENTS)),
    settings=(load_reporting_settings, lambda: load_staff_credentials("reporting")),
    description="KPI read-models toward 100% online and 100% cashless.",
    # The KPI queries take optional filters as ``($n IS NULL OR column = $n)``. After five
    # runs of a prepared statement PostgreSQL may switch to a generic plan, made without the
    # values: it cannot drop the filters that are not set, and some series got several times
    # slower. Planning each run with its values is cheap (docs/reporting.md, "Generic plans").
    db_settings={"plan_cache_mode": "force_custom_plan"},
)
