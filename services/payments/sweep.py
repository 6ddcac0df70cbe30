"""The payment sweep (消込照会): ask the provider about requests whose confirmation never came.

A webhook can be lost (a network, a provider outage, a 5xx of ours): the citizen has paid and
the application never moves. Integrators of public-sector payment platforms are told to run
such a job (GOV.UK Pay calls it a mop-up job). Every ``sweep_interval_s`` the sweep takes the
requests still open past their grace period whose next check is due, schedules each one's next
check (back-off), asks the provider's status endpoint, and records every notice it lists
through the webhook's own handler: a notice already received changes nothing, a new one is
captured (and, late or odd, queued for staff) exactly as if its webhook had come.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
from pydantic import ValidationError

from contracts.payments import ConfirmationSource
from services.payments import provider
from services.payments.errors import PaymentError
from services.payments.handlers import online
from services.payments.settings import PaymentsSettings

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    asked: int = 0
    found: int = 0
    """Payments recorded that no webhook had brought."""
    failed: int = 0
    """Questions the provider did not answer (asked again after the back-off)."""


async def sweep_once(
    pool: asyncpg.Pool, client: httpx.AsyncClient, settings: PaymentsSettings, secret: str
) -> SweepReport:
    """One pass: every request due a question is asked once."""
    report = SweepReport()
    references = await online.requests_to_check(
        pool,
        datetime.now(UTC),
        backoff_s=settings.sweep_backoff_s,
        backoff_max_s=settings.sweep_backoff_max_s,
        horizon_s=settings.sweep_horizon_s,
    )
    for reference in references:
        report.asked += 1
        try:
            status = await provider.payment_status(client, settings.provider_url, secret, reference)
        except (httpx.HTTPError, ValidationError) as exc:
            report.failed += 1
            log.warning(
                "payment status not known", extra={"reference": reference, "error": repr(exc)}
            )
            continue
        for notice in status.notices:
            if notice.reference != reference:
                log.warning(
                    "provider answered for another reference; ignored",
                    extra={"reference": reference, "answered": notice.reference},
                )
                continue
            try:
                outcome = await online.confirm_online_payment(
                    pool, notice, datetime.now(UTC), ConfirmationSource.SWEEP
                )
            except PaymentError as exc:
                log.warning(
                    "a swept notice was refused", extra={"reference": reference, "error": str(exc)}
                )
                continue
            if not outcome.replayed:
                report.found += 1
                log.warning(
                    "payment found by the sweep: its webhook never came",
                    extra={"reference": reference, "payment_id": str(outcome.payment_id)},
                )
    return report
