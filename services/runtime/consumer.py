"""The idempotent consumer (inbox): each event's effects and its inbox row commit together.

A consumer receives a fetched batch of JetStream messages and:

1. reads each message's CloudEvents headers and validates its body against the contract; a
   message that is not a valid event goes to the DLQ with the reason (it can never succeed);
2. applies the valid ones in one transaction: inbox rows first (``ON CONFLICT DO NOTHING``
   tells which events are new), then the handler of each new event, in stream order. A
   ``Batched`` handler takes each run of consecutive new events of its type in one call, so
   it can write them with set-based SQL (a few statements per batch, not per event);
3. acks only after the commit. Nothing is ever acked first.

Two kinds of failure are kept apart:

* "cannot process now": the database is unavailable (or a deadlock, a serialization
  failure: ``db.is_transient``). The batch is NAKed and the process's ``Availability`` is
  tripped, so the pull loops fetch nothing until the database answers again
  (``outage.py``). Nothing counts toward the poison bound, and an outage of any length adds
  at most one delivery to the messages that were in hand;
* "this message fails": any other error. The batch is re-run in halves, each in its own
  transaction, down to the failing events alone, so one bad event cannot hold up the others.
  Each failure of an event alone is counted in ``consumer_failures`` (its own transaction):
  the event is NAKed with a delay growing with that count and dead-lettered, with the error
  as the reason, at the ``max_deliver``-th failure. JetStream's ``num_delivered`` is not the
  count: it also grows with crashes and outages.

A message delivered more than ``delivery_limit`` times is dead-lettered on arrival: one that
crashes its consumer every time is never acked, NAKed or counted otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.msg import Msg

from contracts import EVENT_TYPES
from contracts.envelope import Envelope, EnvelopeError, Event, RawEvent
from services.runtime.consumer_spans import event_spans, record_failure, run_span
from services.runtime.db import is_transient
from services.runtime.dlq import REPLAY_FOR, DeadLetters
from services.runtime.outage import Availability
from services.runtime.streams import ConsumerDecl

log = logging.getLogger(__name__)

Handler = Callable[[asyncpg.Connection, Envelope[Any]], Awaitable[None]]
"""Applies one event's effects on an open transaction. Raise to refuse the event."""

BatchHandler = Callable[[asyncpg.Connection, Sequence[Envelope[Any]]], Awaitable[None]]
"""Applies the effects of several events, in stream order, on an open transaction."""


@dataclass(frozen=True)
class Batched:
    """A handler that takes a run of consecutive events of its type in one call.

    The consumer hands it every run of new (not yet processed) events that share this
    handler, in stream order; it must have the same effects as applying them one by one. If
    it raises, the batch is retried in halves down to single events (``apply`` with one
    event), so one bad event is dead-lettered alone. Called with one event it is a plain
    ``Handler``.
    """

    apply: BatchHandler
    keyed: bool = False
    """The handler applies each event at most once for ever by itself: it claims a key of the
    event's own (a terminal's transaction id) in the same transaction and skips what it
    claimed before, copies in the same call included. The consumer then writes no inbox row
    for these events (a second unique row and index entry per event, for nothing;
    docs/benchmarks.md)."""

    async def __call__(self, conn: asyncpg.Connection, event: Envelope[Any]) -> None:
        await self.apply(conn, (event,))


Admit = Callable[[str, Envelope[Any]], str | None]
"""Optional check of a valid event against the NATS subject it came on: a reason to refuse
it (it is dead-lettered at once), or None. For producers outside cityhall (terminals)."""

Scrub = Callable[[bytes], bytes]
"""Optional: what of a refused message's body may be kept in the DLQ. When it changes the
body, the original is also erased from its stream (a card number must not be kept)."""


def is_keyed(handler: Handler) -> bool:
    """Whether the handler dedupes its events by its own keys (no inbox row for them)."""
    return isinstance(handler, Batched) and handler.keyed


class Refused(Exception):
    """Raised by a handler for an event that can never succeed (a refund above the capture):
    dead-lettered at once with this message as the reason, without retries.

    ``record``, when given, runs in a transaction of its own right before the event is
    dead-lettered (once the event is alone, not while its batch is bisected): what must be kept
    of a refusal although the event's own transaction rolled back (payments announces a
    terminal's conflicting transaction id to finance). It must be idempotent: when it or the
    dead letter fails, the event is NAKed and refused again later."""

    def __init__(self, reason: str, record: Recorder | None = None) -> None:
        super().__init__(reason)
        self.record = record


Recorder = Callable[[asyncpg.Connection], Awaitable[None]]
"""Writes what a refusal leaves behind, on an open transaction (see ``Refused``)."""


# Delay before a failed event comes back, by handler failure (1st, 2nd, ...; the last repeats).
DEFAULT_BACKOFF_S: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)


@dataclass
class ConsumerStats:
    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    nacked: int = 0
    skipped: int = 0


@dataclass
class Delivery:
    """A fetched message that is a valid event, with the handler that applies it."""

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
    availability: Availability | None = None
    """The process's database availability: tripped on an infrastructure failure, so the
    pull loops pause (None: the consumer only NAKs, as when a test drives it by hand)."""

    def __post_init__(self) -> None:
        self._by_type = {model.event_type: (model, h) for model, h in self.handlers.items()}

    @property
    def name(self) -> str:
        return self.decl.durable

    def _delay(self, failures: int) -> float:
        return self.backoff_s[min(max(failures, 1), len(self.backoff_s)) - 1]

    def _unavailable_now(self) -> bool:
        return self.availability is not None and not self.availability.up

    async def process_batch(self, msgs: Sequence[Msg]) -> None:
        await self.apply_batch(await self.decode_batch(msgs))

    async def decode_batch(self, msgs: Sequence[Msg]) -> list[Delivery]:
        """The valid events of a fetched batch, with their handlers; the others are dealt with
        here (dead-lettered, or acked when no handler of this consumer wants them)."""
        items: list[Delivery] = []
        for msg in msgs:
            item = await self._decode(msg)
            if item is not None:
                items.append(item)
        return items

    async def apply_batch(self, items: Sequence[Delivery]) -> None:
        """Apply decoded events in one transaction and ack them after the commit (or find the
        failing ones, see the module's docstring)."""
        if not items:
            return
        if self._unavailable_now():
            await self._cannot_process_now(items, None)
            return
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._apply(conn, items)
        except Exception as exc:
            if is_transient(exc):
                await self._cannot_process_now(items, exc)
                return
            if len(items) == 1:
                await self._failed(items[0], exc)
                return
            log.warning(
                "batch failed; retrying it in halves to find the failing events",
                extra={"consumer": self.name, "error": repr(exc)},
            )
            await self._bisect(items)
            return
        for item in items:
            await item.msg.ack()

    async def _bisect(self, items: Sequence[Delivery]) -> None:
        """Apply a failed batch again in halves, in stream order, each half in its own
        transaction, down to the failing events alone (which are NAKed or dead-lettered).
        One poison event in a batch of 500 costs about 18 transactions instead of 500, so a
        stream with poison in every batch keeps most of its speed."""
        if len(items) == 1:
            await self._process_alone(items[0])
            return
        middle = len(items) // 2
        for half in (items[:middle], items[middle:]):
            if self._unavailable_now():
                await self._cannot_process_now(half, None)
                continue
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self._apply(conn, half)
            except Exception as exc:
                if is_transient(exc):
                    await self._cannot_process_now(half, exc)
                    continue
                await self._bisect(half)
                continue
            for item in half:
                await item.msg.ack()

    async def _decode(self, msg: Msg) -> Delivery | None:
        """The message as a valid event with its handler, or None when it was dealt with."""
        deliveries = msg.metadata.num_delivered
        if deliveries > max(self.decl.delivery_limit, self.decl.max_deliver):
            await self._dead_letter(msg, f"delivered {deliveries} times without success")
            return None
        replay_for = (msg.headers or {}).get(REPLAY_FOR)
        if replay_for is not None and replay_for != self.name:
            # A dead letter re-driven for another consumer: this one applied the event (or
            # has its own letter). Dropped without the inbox, which may be pruned by now.
            self.stats.skipped += 1
            await msg.ack()
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
        return Delivery(msg, envelope, handler)

    async def _record_in_inbox(
        self, conn: asyncpg.Connection, items: Sequence[Delivery]
    ) -> set[str]:
        """Inbox rows for the events whose handler is not ``keyed``; the ids that were new."""
        tracked = [item.envelope for item in items if not is_keyed(item.handler)]
        if not tracked:
            return set()
        rows = await conn.fetch(
            """INSERT INTO inbox (consumer, event_id, ce_type)
               SELECT $1, t.id, t.type FROM unnest($2::text[], $3::text[]) AS t(id, type)
               ON CONFLICT DO NOTHING RETURNING event_id""",
            self.name,
            [env.id for env in tracked],
            [env.type for env in tracked],
        )
        return {r["event_id"] for r in rows}

    async def _apply(self, conn: asyncpg.Connection, items: Sequence[Delivery]) -> None:
        new_ids = await self._record_in_inbox(conn, items)
        run: list[Delivery] = []  # consecutive new events that share one Batched handler
        for item in items:
            env = item.envelope
            if not is_keyed(item.handler):
                if env.id not in new_ids:
                    self.stats.duplicates += 1
                    continue
                new_ids.discard(env.id)  # a second copy in the same batch is a duplicate too
            if run and item.handler is not run[0].handler:
                await self._apply_run(conn, run)
                run = []
            if isinstance(item.handler, Batched):
                run.append(item)
                continue
            with run_span(self.name, [item]) as span:
                try:
                    await item.handler(conn, env)
                except Exception as exc:
                    record_failure(span, exc)
                    raise
            self.stats.processed += 1
        if run:
            await self._apply_run(conn, run)

    async def _apply_run(self, conn: asyncpg.Connection, run: Sequence[Delivery]) -> None:
        handler = run[0].handler
        assert isinstance(handler, Batched)
        started_ns = time.time_ns()
        with run_span(self.name, run) as span:
            recording = span.is_recording()  # (an ended span no longer is)
            try:
                await handler.apply(conn, [item.envelope for item in run])
            except Exception as exc:
                record_failure(span, exc)
                raise
        if len(run) > 1 and recording:
            event_spans(self.name, run, span, started_ns, time.time_ns())
        self.stats.processed += len(run)

    async def _process_alone(self, item: Delivery) -> None:
        if self._unavailable_now():
            await self._cannot_process_now([item], None)
            return
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._apply(conn, [item])
        except Exception as exc:
            await self._failed(item, exc)
            return
        await item.msg.ack()

    async def _cannot_process_now(self, items: Sequence[Delivery], exc: Exception | None) -> None:
        """Infrastructure, not the events: NAK them (no failure counted) and pause fetching
        until the database answers. ``exc`` None: it was known to be down already."""
        if exc is not None:
            log.warning(
                "batch failed (database unavailable or contention); NAK, not counted",
                extra={"consumer": self.name, "error": repr(exc), "size": len(items)},
            )
            if self.availability is not None:
                self.availability.lost(exc)
        for item in items:
            await self._nak(item.msg, self._delay(1))

    async def _failed(self, item: Delivery, exc: Exception) -> None:
        """Count the failure; NAK with a delay, or at the ``max_deliver``-th failure
        dead-letter with the error as the reason."""
        if isinstance(exc, Refused):
            if exc.record is not None and not await self._record_refusal(item, exc.record):
                await self._nak(item.msg, self._delay(1))
                return
            await self._dead_letter(item.msg, f"refused: {exc}")
            return
        if is_transient(exc):
            await self._cannot_process_now([item], exc)
            return
        failures = await self._count_failure(item, exc)
        if failures is None:  # the count could not be written: the database is the problem
            return
        if failures >= self.decl.max_deliver:
            deliveries = item.msg.metadata.num_delivered
            await self._dead_letter(
                item.msg,
                f"handler failed {failures} times (delivery {deliveries}): "
                f"{type(exc).__name__}: {exc}",
            )
            return
        log.warning(
            "event failed; NAK with delay",
            extra={"consumer": self.name, "event_id": item.envelope.id, "error": repr(exc)},
        )
        await self._nak(item.msg, self._delay(failures))

    async def _count_failure(self, item: Delivery, exc: Exception) -> int | None:
        """This event's handler failures so far, this one included (its own transaction);
        None when it could not be counted (then it was NAKed as "cannot process now")."""
        meta = item.msg.metadata
        try:
            failures: int = await self.pool.fetchval(
                """INSERT INTO consumer_failures AS f
                       (consumer, stream_seq, event_id, failures, last_error)
                   VALUES ($1, $2, $3, 1, $4)
                   ON CONFLICT (consumer, stream_seq, event_id) DO UPDATE
                   SET failures = f.failures + 1, last_error = EXCLUDED.last_error,
                       updated_at = now()
                   RETURNING failures""",
                self.name,
                meta.sequence.stream,
                item.envelope.id,
                f"{type(exc).__name__}: {exc}"[:1000],
            )
        except Exception as count_exc:
            await self._cannot_process_now([item], count_exc)
            return None
        return failures

    async def _record_refusal(self, item: Delivery, record: Recorder) -> bool:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await record(conn)
        except Exception as exc:
            log.warning(
                "a refusal's record failed; NAK with delay",
                extra={"consumer": self.name, "event_id": item.envelope.id, "error": repr(exc)},
            )
            return False
        return True

    async def _nak(self, msg: Msg, delay: float) -> None:
        self.stats.nacked += 1
        await msg.nak(delay=delay)

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
            await self._nak(msg, self._delay(1))
            return
        self.stats.dead_lettered += 1
        log.warning(
            "message dead-lettered",
            extra={"consumer": self.name, "subject": msg.subject, "reason": reason},
        )
        await msg.term()
