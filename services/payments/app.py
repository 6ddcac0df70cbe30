"""Composition root of the payments service (its business arrives with the payments issue)."""

from __future__ import annotations

from services.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="payments",
    package="services.payments",
    description="Terminal events, captures, refunds, receipts, daily reconciliation.",
)
