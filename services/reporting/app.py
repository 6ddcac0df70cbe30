"""Composition root of the reporting service."""

from __future__ import annotations

from services.reporting.api import router
from services.reporting.subscribers import consumers
from services.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="reporting",
    package="services.reporting",
    router=router,
    consumers=consumers,
    description="KPI read-models toward 100% online and 100% cashless.",
)
