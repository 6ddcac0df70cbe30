"""Composition root of the notifications service (its business arrives with its issue)."""

from __future__ import annotations

from services.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="notifications",
    package="services.notifications",
    description="E-mail and webhook notifications from templates, exactly once.",
)
