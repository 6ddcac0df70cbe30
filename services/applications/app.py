"""Composition root of the applications service."""

from __future__ import annotations

from services.applications.api import router
from services.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="applications",
    package="services.applications",
    router=router,
    description="Procedure catalog, applications by channel, certificates.",
)
