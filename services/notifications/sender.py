"""The sender (送信ワーカー): claims due notifications, sends them, records what happened.

Several replicas can run it: ``FOR UPDATE SKIP LOCKED`` hands each row to one of them, and
the claim's lease (``NOTIFY_CLAIM_LEASE_S``) brings back a row whose sender died mid-attempt.
Each channel has a token bucket (aiolimiter's leaky bucket: ``NOTIFY_<CHANNEL>_RATE_PER_S``
messages a second, bursts of a tenth of that), so a burst of 10,000 events reaches the SMTP
server at a steady rate rather than all at once. The bucket is per process: with N replicas
the server sees up to N times the rate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg
from aiolimiter import AsyncLimiter
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from contracts.notifications import NotificationChannel
from services.notifications import handlers, store
from services.notifications.channels import Channel
from services.notifications.domain import DeliveryError, TemporaryFailure
from services.notifications.handlers import Notifier
from services.runtime.telemetry import context_from_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cityhall.notifications")
SEND_SPANS = {NotificationChannel.EMAIL: "smtp send", NotificationChannel.WEBHOOK: "webhook send"}
"""The span of each hand-off, a child of the span of the event that caused the notification."""


@dataclass
class SenderStats:
    attempts: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0


@dataclass
class Sender:
    pool: asyncpg.Pool
    notifier: Notifier
    channels: Mapping[NotificationChannel, Channel]
    stats: SenderStats = field(default_factory=SenderStats)

    def __post_init__(self) -> None:
        s = self.notifier.settings
        rates = {
            NotificationChannel.EMAIL: s.email_rate_per_s,
            NotificationChannel.WEBHOOK: s.webhook_rate_per_s,
        }
        # A leaky bucket holding a tenth of a second's worth: any one-second window sees at
        # most 1.1 x the rate (a bucket of a whole second's worth would allow twice the rate).
        self.limiters = {
            ch: AsyncLimiter(max(rate / 10, 1.0), max(rate / 10, 1.0) / rate)
            for ch, rate in rates.items()
        }
        self._slots = asyncio.Semaphore(s.sender_concurrency)

    async def run(self) -> None:
        """Loop until cancelled: send what is due, then wait a little when nothing was."""
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sender round failed; retrying")
                done = 0
            if done == 0:
                await asyncio.sleep(self.notifier.settings.sender_poll_s)

    def claim_size(self) -> int:
        """Never claim more than the slowest channel can start within half a lease: a row
        still waiting for its turn when its lease runs out would be claimed (and sent) twice."""
        s = self.notifier.settings
        slowest = min(s.email_rate_per_s, s.webhook_rate_per_s)
        return max(1, min(s.sender_batch, int(slowest * s.claim_lease_s / 2)))

    async def run_once(self) -> int:
        s = self.notifier.settings
        claimed = await store.claim_due(self.pool, self.claim_size(), s.claim_lease_s)
        if claimed:
            await asyncio.gather(*(self._deliver(n) for n in claimed))
        return len(claimed)

    async def _send(self, n: store.Claimed) -> str | DeliveryError:
        """One attempt on the channel, in a CLIENT span of the cause's trace."""
        with tracer.start_as_current_span(
            SEND_SPANS[n.channel],
            context=context_from_headers(n.trace_headers) if n.trace_headers else None,
            kind=SpanKind.CLIENT,
            attributes={
                "cityhall.notification_id": str(n.id),
                "cityhall.notification_rule": n.rule,
                "cityhall.notification_attempt": n.attempts,
            },
        ) as span:
            result: str | DeliveryError
            try:
                result = await self.channels[n.channel].send(n)
            except DeliveryError as exc:
                result = exc
            except Exception as exc:  # a bug in a channel: retry, and say so
                log.exception("channel failed unexpectedly", extra={"notification": str(n.id)})
                result = TemporaryFailure(f"{type(exc).__name__}: {exc}")
            if isinstance(result, DeliveryError):
                span.set_status(Status(StatusCode.ERROR, str(result)))
            return result

    async def _deliver(self, n: store.Claimed) -> None:
        async with self._slots, self.limiters[n.channel]:
            self.stats.attempts += 1
            result = await self._send(n)
        outcome = await handlers.record_attempt(self.pool, self.notifier, n, result)
        kind = type(outcome).__name__
        if kind == "Sent":
            self.stats.sent += 1
        elif kind == "RetryLater":
            self.stats.retried += 1
        else:
            self.stats.dead += 1
            log.warning(
                "notification dead",
                extra={"notification": str(n.id), "rule": n.rule, "reason": str(result)},
            )
