"""Composition root of the payments service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import httpx

from contracts.subjects import PAYMENTS, TERMINALS
from services.payments import sweep
from services.payments.api import router
from services.payments.handlers import online
from services.payments.settings import load_payments_settings, payments_settings
from services.payments.store import terminals
from services.payments.subscribers import APPLICATION_FEES, TERMINAL_MESSAGES, consumers
from services.runtime.auth import load_staff_credentials
from services.runtime.service import BusAccess, ServiceContext, ServiceDefinition

log = logging.getLogger(__name__)


async def load_facilities(ctx: ServiceContext) -> None:
    """Before anything is served: read payments' own settings (a bad value stops the service
    with the field's error) and load the 34 facilities (contracts.facilities) into the schema,
    which postings and settlements refer to (a start-up job raced the first request)."""
    payments_settings(ctx)
    await terminals.sync_facilities(ctx.pool)


def background(ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
    sweep_s = payments_settings(ctx).expiry_sweep_s

    async def expire_payment_requests() -> None:
        """Cancel application fee requests whose time ran out (loops until cancelled)."""
        while True:
            expired = await online.expire_payment_requests(ctx.pool, datetime.now(UTC))
            if expired:
                log.info("payment requests expired", extra={"count": expired})
            await asyncio.sleep(sweep_s)

    async def sweep_provider() -> None:
        """Ask the provider about open requests whose confirmation never came (the payment
        sweep, services.payments.sweep); loops until cancelled. Off without a provider secret:
        its questions are signed with it."""
        settings = payments_settings(ctx)
        if settings.provider_secret is None:
            return
        secret = settings.provider_secret.get_secret_value()
        async with httpx.AsyncClient(timeout=settings.sweep_timeout_s) as client:
            while True:
                report = await sweep.sweep_once(ctx.pool, client, settings, secret)
                if report.asked:
                    log.info("payment sweep", extra=asdict(report))
                await asyncio.sleep(settings.sweep_interval_s)

    return [expire_payment_requests, sweep_provider]


DEFINITION = ServiceDefinition(
    name="payments",
    package="services.payments",
    router=router,
    consumers=consumers,
    # Payments may erase a terminal's message that carried a card number (docs/security.md).
    bus=BusAccess(
        publishes=PAYMENTS,
        durables=(TERMINAL_MESSAGES, APPLICATION_FEES),
        erases_from=(TERMINALS,),
    ),
    startup=load_facilities,
    background=background,
    settings=(load_payments_settings, lambda: load_staff_credentials("payments")),
    description=(
        "Cashless and cash payments at the city's 34 facilities (キャッシュレス決済): terminal "
        "transactions, the ledger, receipts (領収書), refunds, daily reconciliation (調定)."
    ),
)
