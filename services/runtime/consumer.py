"""The idempotent consumer (inbox): each event's effects and its inbox row commit together.

A consumer receives a fetched batch of JetStream messages and:

1. reads each message's CloudEvents headers and validates its body against the contract; a
   message that is not a valid event goes to the DLQ with the reason (it can never succeed);
2. applies the valid ones in one transaction: inbox rows first (``ON CONFLICT DO NOTHING``
   tells which events are new), then the handler of each new event, in stream order;
3. acks only after the commit. Nothing is ever acked first.

When the batch transaction fails, a transient error (database unreachable, deadlock) NAKs the
whole batch with a delay. Any other error re-runs the batch one event per transaction, so one
bad event cannot hold up the others: it is NAKed with a growing delay and, on its last
delivery, dead-lettered with the error as the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from contracts import EVENT_TYPES
from contracts.envelope import Envelope, EnvelopeError, Event, RawEvent
from services.runtime.db import is_transient
from services.runtime.dlq import DeadLetters
from services.runtime.streams import ConsumerDecl
from services.runtime.telemetry import context_from_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cityhall.consumer")

Handler = Callable[[asyncpg.Connection, Envelope[Any]], Awaitable[None]]
"""Applies one event's effects on an open transaction. Raise to refuse the event."""

Admit = Callable[[str, Envelope[Any]], str | None]
"""Optional check of a valid event against the NATS subject it came on: a reason to refuse
it (it is dead-lettered at once), or None. For producers outside cityhall (terminals)."""

Scrub = Callable[[bytes], bytes]
"""Optional: what of a refused message's body may be kept in the DLQ. When it changes the
body, the original is also erased from its stream (a card number must not be kept)."""


class Refused(Exception):
    """Raised by a handler for an event that can never succeed (a refund above the capture):
    dead-lettered at once with this message as the reason, without retries."""


# Delay before a NAKed message comes back, by delivery attempt (1st, 2nd, ...).
DEFAULT_BACKOFF_S: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)


@dataclass
class ConsumerStats:
    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    nacked: int = 0
    skipped: int = 0


@dataclass
class _Item:
    msg: Msg
    envelope: Envelope[Any]
    handler: Handler


@dataclass
class EventConsumer:
    decl: ConsumerDecl
    handlers: Mapping[type[Event], Handler]
    pool: asyncpg.Pool
    dead_letters: DeadLetters
    backoff_s: Sequence[float] = DEFAULT_BACKOFF_S
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    admit: Admit | None = None
    scrub: Scrub | None = None

    def __post_init__(self) -> None:
        self._by_type = {model.event_type: (model, h) for model, h in self.handlers.items()}

    @property
    def name(self) -> str:
        return self.decl.durable

    def _delay(self, deliveries: int) -> float:
        return self.backoff_s[min(max(deliveries, 1), len(self.backoff_s)) - 1]

    async def process_batch(self, msgs: Sequence[Msg]) -> None:
        items: list[_Item] = []
        for msg in msgs:
            item = await self._decode(msg)
            if item is not None:
                items.append(item)
        if not items:
            return
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._apply(conn, items)
        except Exception as exc:
            if is_transient(exc):
                log.warning(
                    "batch failed (transient); NAK with delay",
                    extra={
                        "consumer": self.name,
                        "error": repr(exc),
                        "size": len(items),
                    },
                )
                for item in items:
                    await self._nak(item.msg)
                return
            if len(items) == 1:
                await self._failed(items[0], exc)
                return
            log.warning(
                "batch failed; retrying one event per transaction",
                extra={"consumer": self.name, "error": repr(exc)},
            )
            for item in items:
                await self._process_alone(item)
            return
        for item in items:
            await item.msg.ack()

    async def _decode(self, msg: Msg) -> _Item | None:
        """The message as a valid event with its handler, or None when it was dealt with."""
        deliveries = msg.metadata.num_delivered
        if deliveries > max(self.decl.delivery_limit, self.decl.max_deliver):
            await self._dead_letter(msg, f"delivered {deliveries} times without success")
            return None
        try:
            raw = RawEvent.from_headers(msg.headers)
            if raw.type not in EVENT_TYPES:
                raise EnvelopeError(f"unknown event type {raw.type!r}")
            entry = self._by_type.get(raw.type)
            if entry is None:
                # A known event this consumer has no handler for: not its business.
                self.stats.skipped += 1
                await msg.ack()
                return None
            model, handler = entry
            envelope: Envelope[Any] = raw.parse(model, msg.data)
        except EnvelopeError as exc:
            await self._dead_letter(msg, f"invalid event: {exc}")
            return None
        if self.admit is not None and (reason := self.admit(msg.subject, envelope)):
            await self._dead_letter(msg, f"refused: {reason}")
            return None
        return _Item(msg, envelope, handler)

    async def _apply(self, conn: asyncpg.Connection, items: Sequence[_Item]) -> None:
        ids = [item.envelope.id for item in items]
        types = [item.envelope.type for item in items]
        new_ids = {
            r["event_id"]
            for r in await conn.fetch(
                """INSERT INTO inbox (consumer, event_id, ce_type)
                   SELECT $1, t.id, t.type FROM unnest($2::text[], $3::text[]) AS t(id, type)
                   ON CONFLICT DO NOTHING RETURNING event_id""",
                self.name,
                ids,
                types,
            )
        }
        for item in items:
            env = item.envelope
            if env.id not in new_ids:
                self.stats.duplicates += 1
                continue
            new_ids.discard(env.id)  # a second copy in the same batch is a duplicate too
            with tracer.start_as_current_span(
                f"{item.msg.subject} process",
                context=context_from_headers(env.trace_headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.operation": "process",
                    "messaging.destination.name": item.msg.subject,
                    "messaging.message.id": env.id,
                    "messaging.consumer.group.name": self.name,
                    "cloudevents.event_type": env.type,
                    "cloudevents.event_subject": env.subject,
                },
            ) as span:
                try:
                    await item.handler(conn, env)
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    raise
            self.stats.processed += 1

    async def _process_alone(self, item: _Item) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._apply(conn, [item])
        except Exception as exc:
            await self._failed(item, exc)
            return
        await item.msg.ack()

    async def _failed(self, item: _Item, exc: Exception) -> None:
        """NAK with a delay; on the last delivery, dead-letter with the error as the reason."""
        deliveries = item.msg.metadata.num_delivered
        if isinstance(exc, Refused):
            await self._dead_letter(item.msg, f"refused: {exc}")
            return
        if not is_transient(exc) and deliveries >= self.decl.max_deliver:
            await self._dead_letter(
                item.msg,
                f"handler failed on delivery {deliveries}: {type(exc).__name__}: {exc}",
            )
            return
        log.warning(
            "event failed; NAK with delay",
            extra={"consumer": self.name, "event_id": item.envelope.id, "error": repr(exc)},
        )
        await self._nak(item.msg)

    async def _nak(self, msg: Msg) -> None:
        self.stats.nacked += 1
        await msg.nak(delay=self._delay(msg.metadata.num_delivered))

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        body = self.scrub(msg.data) if self.scrub is not None else msg.data
        try:
            await self.dead_letters.send(msg, self.name, reason, body=body)
            if body != msg.data:
                meta = msg.metadata
                await self.dead_letters.erase(meta.stream, meta.sequence.stream)
        except Exception as exc:
            # Never drop: if the DLQ cannot take it, the message comes back later.
            log.error(
                "dead-letter publish failed; NAK",
                extra={"consumer": self.name, "error": repr(exc), "reason": reason},
            )
            await self._nak(msg)
            return
        self.stats.dead_lettered += 1
        log.warning(
            "message dead-lettered",
            extra={"consumer": self.name, "subject": msg.subject, "reason": reason},
        )
        await msg.term()
