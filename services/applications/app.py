"""Composition root of the applications service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from contracts.subjects import APPLICATIONS
from services.applications.api import router
from services.applications.api.deps import settings_of
from services.applications.settings import load_applications_settings
from services.applications.store import idempotency_keys, identity_challenges
from services.applications.subscribers import PAYMENT_EVENTS, consumers
from services.runtime.auth import load_staff_credentials
from services.runtime.service import BusAccess, ServiceContext, ServiceDefinition

log = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 600.0
CHALLENGES_KEPT = timedelta(days=1)
"""How long an expired challenge's row stays (which application used it, for inquiries)."""


def background(ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
    async def forget_old_idempotency_keys() -> None:
        """Idempotency-Keys are kept APPLICATIONS_IDEMPOTENCY_RETENTION_HOURS (>= 24 h)."""
        keep = timedelta(hours=settings_of(ctx).idempotency_retention_hours)
        while True:
            # Sleep first: nothing can be old at start-up, and the first requests should not
            # find the pool changed by a sweep.
            await asyncio.sleep(SWEEP_INTERVAL_S)
            removed = await idempotency_keys.forget_idempotency_keys(
                ctx.pool, datetime.now(UTC) - keep
            )
            if removed:
                log.info("old idempotency keys removed", extra={"count": removed})

    async def forget_expired_challenges() -> None:
        """Signing challenges live minutes; their rows are kept a day after, then removed."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            expired_before = datetime.now(UTC) - CHALLENGES_KEPT
            removed = await identity_challenges.forget_expired_challenges(ctx.pool, expired_before)
            if removed:
                log.info("expired identity challenges removed", extra={"count": removed})

    return [forget_old_idempotency_keys, forget_expired_challenges]


DEFINITION = ServiceDefinition(
    name="applications",
    package="services.applications",
    router=router,
    consumers=consumers,
    bus=BusAccess(publishes=APPLICATIONS, durables=(PAYMENT_EVENTS,)),
    background=background,
    settings=(load_applications_settings, lambda: load_staff_credentials("applications")),
    description="Procedure catalog, applications by channel, certificates.",
)
