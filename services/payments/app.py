"""Composition root of the payments service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from services.payments import store
from services.payments.api import router
from services.payments.subscribers import consumers
from services.runtime.service import ServiceContext, ServiceDefinition


def background(ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
    async def load_facilities() -> None:
        """Load the 34 facilities (contracts.facilities) into the schema, once at start-up."""
        await store.sync_facilities(ctx.pool)

    return [load_facilities]


DEFINITION = ServiceDefinition(
    name="payments",
    package="services.payments",
    router=router,
    consumers=consumers,
    background=background,
    description=(
        "Cashless and cash payments at the city's 34 facilities (キャッシュレス決済): terminal "
        "transactions, the ledger, receipts (領収書), refunds, daily reconciliation (調定)."
    ),
)
