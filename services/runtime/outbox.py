"""The transactional outbox: save a state change and its events atomically, publish later.

``add_events`` writes event rows in the caller's transaction. The ``OutboxRelay`` publishes
unpublished rows in order with ``Nats-Msg-Id`` = event id, and marks a row published only
after JetStream's PubAck. A crash between commit and publish loses nothing (the row waits); a
crash between PubAck and marking publishes the row again, which JetStream drops inside its
duplicate window and the consumers' inbox drops after it.

One relay per service schema is active at a time (a PostgreSQL advisory lock elects it), so
rows go out in commit order even with several replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from nats.js import JetStreamContext, api
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from contracts.envelope import Envelope, Event, cloudevent_headers
from contracts.subjects import absolute
from services.runtime import db
from services.runtime.telemetry import context_from_headers, current_trace_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cityhall.outbox")

NOTIFY_CHANNEL = "cityhall_outbox"


OUTBOX_COLUMNS = (
    "event_id, subject, ce_type, ce_source, ce_subject, ce_time, trace_headers, payload"
)
"""The columns a writer fills in an outbox row, in the order of ``outbox_values``."""

OUTBOX_UNNEST_TYPES = ("uuid", "text", "text", "text", "text", "timestamptz", "text", "text")
"""The array type of each of ``OUTBOX_COLUMNS`` for ``unnest`` (trace_headers as JSON text)."""


def outbox_values(event: Envelope[Event], trace_headers: str) -> tuple[Any, ...]:
    """One outbox row in ``OUTBOX_COLUMNS`` order. ``trace_headers``: the JSON text of the W3C
    context of the request or batch that made the event (its producer span's parent). For a
    service that writes its events inside a statement of its own (applications' group
    commit, each event with its own request's context); others call ``add_events``."""
    return (
        event.id,
        event.data.subject,
        event.type,
        event.source,
        event.subject,
        event.time,
        trace_headers,
        event.data.model_dump_json(),
    )


_OUTBOX_COLUMN_NAMES = tuple(c.strip() for c in OUTBOX_COLUMNS.split(","))


async def add_events(conn: asyncpg.Connection, envelopes: Sequence[Envelope[Event]]) -> None:
    """Write events to the outbox inside the caller's open transaction, with the current trace
    context."""
    if not envelopes:
        return
    trace_headers = json.dumps(current_trace_headers())
    # One COPY for all of them, not one INSERT per row: a consumer batch writes hundreds of
    # events at once (db.append_rows).
    await db.append_rows(
        conn, "outbox", _OUTBOX_COLUMN_NAMES, (outbox_values(e, trace_headers) for e in envelopes)
    )


def message_id(event_id: str, republished: int = 0) -> str:
    """A row's ``Nats-Msg-Id``: the event id, with a suffix once the reconciler re-queued it."""
    return event_id if not republished else f"{event_id}:{republished}"


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    event_id: str
    subject: str
    ce_type: str
    ce_source: str
    ce_subject: str
    ce_time: datetime
    trace_headers: dict[str, str]
    payload: str
    republished: int = 0

    def headers(self) -> dict[str, str]:
        return cloudevent_headers(
            id=self.event_id,
            source=self.ce_source,
            type=self.ce_type,
            time=self.ce_time,
            subject=self.ce_subject,
            msg_id=message_id(self.event_id, self.republished),
            trace_headers=self.trace_headers,
        )


Publish = Callable[[OutboxRow], Awaitable[int]]
"""Publishes one row and returns the stream sequence from the PubAck (raises on failure)."""

PublishBatch = Callable[[Sequence[OutboxRow]], Awaitable[list[int | BaseException]]]
"""Publishes rows in order; for each, the stream sequence from its PubAck or the error."""


MAX_IN_FLIGHT = 1000
"""PubAcks awaited at once; below ``PUBLISH_ASYNC_MAX_PENDING``."""

PUBLISH_ASYNC_MAX_PENDING = 4000
"""nats-py's default ``publish_async_max_pending``, which ``ServiceContext.js`` sets explicitly."""


class PublishSlotsExhausted(RuntimeError):
    """nats-py's pending publishes are at their limit before a batch starts: each batch's are
    settled before the next, so slots were left behind (``publish_async`` keeps a future it
    never sent, docs/architecture.md). Failing the rows beats waiting for ever on a slot."""


_Sent = asyncio.Future[api.PubAck] | BaseException
"""A row given to ``publish_async``: the future of its PubAck, or why it was not sent."""


def jetstream_publisher(
    js: JetStreamContext,
    namespace: str,
    stream_of: Callable[[str], str],
    *,
    timeout_s: float = 10.0,
    max_pending: int = PUBLISH_ASYNC_MAX_PENDING,
) -> PublishBatch:
    """Publish a batch with nats-py's ``publish_async``: every row is sent at once on the
    connection (the server keeps their order) and the PubAcks are awaited together, instead of
    a round trip per row.

    Each run of rows written in the same trace (one request, one consumer batch) gets one
    PRODUCER span, a child of that trace; its context replaces the row's ``traceparent`` so the
    consumers' spans descend from it.
    """

    async def publish_batch(rows: Sequence[OutboxRow]) -> list[int | BaseException]:
        if len(rows) > MAX_IN_FLIGHT:
            head = await publish_batch(rows[:MAX_IN_FLIGHT])
            return head + await publish_batch(rows[MAX_IN_FLIGHT:])
        if js.publish_async_pending() + len(rows) > max_pending:
            return [PublishSlotsExhausted(js.publish_async_pending())] * len(rows)
        sent: list[_Sent] = []
        for _, run in itertools.groupby(rows, key=lambda r: r.trace_headers.get("traceparent")):
            sent += await _send_run(js, namespace, stream_of, list(run))
        return await _pub_acks(sent, timeout_s)

    return publish_batch


async def _send_run(
    js: JetStreamContext,
    namespace: str,
    stream_of: Callable[[str], str],
    run: Sequence[OutboxRow],
) -> list[_Sent]:
    """Send a run of rows written in the same trace under one PRODUCER span, whose context
    replaces each row's own."""
    first = run[0]
    sent: list[_Sent] = []
    with tracer.start_as_current_span(
        f"{first.subject} publish",
        context=context_from_headers(first.trace_headers),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation": "publish",
            "messaging.destination.name": absolute(namespace, first.subject),
            "messaging.batch.message_count": len(run),
        },
    ):
        producer = current_trace_headers()
        for row in run:
            headers = row.headers()
            headers.update(producer)
            try:
                future = await js.publish_async(
                    absolute(namespace, row.subject),
                    row.payload.encode(),
                    stream=stream_of(row.subject),
                    headers=headers,
                )
            except Exception as error:  # refused before sending (closed, too large)
                sent.append(error)
            else:
                sent.append(future)
    return sent


async def _pub_acks(sent: Sequence[_Sent], timeout_s: float) -> list[int | BaseException]:
    """For each row sent, the stream sequence from its PubAck or the error; the PubAcks are
    awaited together, for ``timeout_s`` at most."""
    futures = [f for f in sent if not isinstance(f, BaseException)]
    if futures:
        _done, pending = await asyncio.wait(futures, timeout=timeout_s)
        for future in pending:
            future.cancel()  # nats-py forgets a cancelled future
    return [_outcome(f, timeout_s) for f in sent]


def _outcome(sent: _Sent, timeout_s: float) -> int | BaseException:
    if isinstance(sent, BaseException):
        return sent
    if sent.cancelled():
        return TimeoutError(f"no PubAck in {timeout_s} s")
    if (failure := sent.exception()) is not None:
        return failure
    return int(sent.result().seq)


def _outbox_rows(records: Sequence[asyncpg.Record]) -> list[OutboxRow]:
    # The rows of one transaction share their trace headers: parse each distinct text once.
    trace_headers = {text: json.loads(text) for text in {r["trace_headers"] for r in records}}
    return [
        OutboxRow(
            seq=r["seq"],
            event_id=r["event_id"],
            subject=r["subject"],
            ce_type=r["ce_type"],
            ce_source=r["ce_source"],
            ce_subject=r["ce_subject"],
            ce_time=r["ce_time"],
            trace_headers=trace_headers[r["trace_headers"]],
            payload=r["payload"],
            republished=r["republished"],
        )
        for r in records
    ]


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        publish: PublishBatch,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        retention_hours: float = 168.0,
        kill_before_publish: bool = False,
        kill_after_publish: bool = False,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._retention_hours = retention_hours
        self._kill_before_publish = kill_before_publish
        self._kill_after_publish = kill_after_publish
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.is_leader = False
        self.published_total = 0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until ``stop()``: elect, drain, wait for NOTIFY or the poll interval, repeat."""
        while not self._stopping.is_set():
            try:
                await self._run_as_candidate()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"schema": self._schema})
                await self._sleep(self._poll_interval_s)

    async def _run_as_candidate(self) -> None:
        async with self._pool.acquire() as conn:
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"{self._schema}.outbox"
            )
            if not got:
                self.is_leader = False
                await self._sleep(self._poll_interval_s)
                return
            self.is_leader = True
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                last_cleanup = 0.0
                loop = asyncio.get_running_loop()
                while not self._stopping.is_set():
                    self._wake.clear()
                    # On the leader's own connection: a pooled one per statement would pay an
                    # acquire and a reset for each of a drain's statements.
                    published = await self.drain_once(conn)
                    if loop.time() - last_cleanup > 60:
                        await self.delete_expired(conn)
                        last_cleanup = loop.time()
                    if published < self._batch_size:
                        await self._sleep(self._poll_interval_s)
            finally:
                self.is_leader = False
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                await conn.execute(
                    "SELECT pg_advisory_unlock(hashtext($1))", f"{self._schema}.outbox"
                )

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._schema:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def drain_once(self, conn: asyncpg.Connection | None = None) -> int:
        """Publish one batch of unpublished rows in order; return how many were published.
        ``conn``: the connection to use (the leader's), else the pool's."""
        db: asyncpg.Connection | asyncpg.Pool = conn if conn is not None else self._pool
        records = await db.fetch(
            """SELECT seq, event_id::text, subject, ce_type, ce_source, ce_subject, ce_time,
                      trace_headers::text, payload, republished
               FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1""",
            self._batch_size,
        )
        if not records:
            return 0
        rows = _outbox_rows(records)
        if self._kill_before_publish:
            log.warning("fault injection: killing the process before publishing")
            os.kill(os.getpid(), signal.SIGKILL)
        results = await self._publish(rows)
        done = [(r.seq, res) for r, res in zip(rows, results, strict=True) if isinstance(res, int)]
        if self._kill_after_publish and done:
            log.warning("fault injection: killing the process after the PubAck, before marking")
            os.kill(os.getpid(), signal.SIGKILL)
        failed = [res for res in results if isinstance(res, BaseException)]
        if done:
            await db.execute(
                """UPDATE outbox o SET published_at = now(), stream_seq = d.stream_seq
                   FROM unnest($1::bigint[], $2::bigint[]) AS d(seq, stream_seq)
                   WHERE o.seq = d.seq""",
                [seq for seq, _ in done],
                [stream_seq for _, stream_seq in done],
            )
            self.published_total += len(done)
        if failed:
            log.warning(
                "outbox publish failed; will retry",
                extra={"failed": len(failed), "error": repr(failed[0])},
            )
            await self._sleep(min(self._poll_interval_s, 1.0))
        return len(done)

    async def delete_expired(self, conn: asyncpg.Connection | None = None) -> int:
        db: asyncpg.Connection | asyncpg.Pool = conn if conn is not None else self._pool
        result = await db.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
            self._retention_hours * 3600,
        )
        return int(result.split()[-1])

    async def pending(self) -> int:
        return await outbox_pending(self._pool)


async def outbox_pending(pool: asyncpg.Pool) -> int:
    """Rows written and not yet published (by whichever relay publishes them)."""
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
