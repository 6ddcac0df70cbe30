"""Outbox reconciliation: find events JetStream acknowledged and later lost, publish them again.

A PubAck says the stream stored the message, not that it keeps it: a stream deleted or purged
by mistake, a message deleted by hand, a server that lost the tail of its file store (it
acknowledges before its next fsync with the default ``sync_interval``) or a stream restored
from an older backup all lose events the outbox has marked published. The outbox keeps
published rows for ``OUTBOX_RETENTION_HOURS`` with their stream sequence, so one pass can
compare what the service published with what the streams hold:

* rows past the ``verified_through`` mark (published at least ``grace_s`` ago) are looked up
  one by one (direct get by sequence, several at once) and must carry their ``Nats-Msg-Id``;
  the mark then moves up to the first row that is not verified;
* rows before the mark are checked against each stream's state in one request per stream:
  their sequence was deleted, is below the stream's first sequence, is above its last, or the
  stream was created after the row was published.

A row found lost is queued again (``published_at`` cleared, ``republished`` + 1); the relay
publishes it with ``Nats-Msg-Id`` = ``<event id>:<republished>`` so JetStream does not drop it
as a duplicate of the lost copy, and consumers still apply it once (their inbox keys on the
``ce-id``). Rows older than a stream's ``max_age`` are expected to be gone and are skipped.

One reconciler per service schema runs at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import NotFoundError

from contracts.envelope import NATS_MSG_ID
from services.runtime.outbox import NOTIFY_CHANNEL, message_id

log = logging.getLogger(__name__)

LOOKUPS_IN_FLIGHT = 64
"""Direct gets awaited at once by one pass."""


@dataclass
class ReconcileReport:
    """What one pass checked and found."""

    checked_one_by_one: int = 0
    checked_against_state: int = 0
    lost: list[str] = field(default_factory=list)
    """Event ids queued again."""
    verified_through: int = 0
    skipped: bool = False
    """Another replica holds the reconciler's lock."""


@dataclass(frozen=True)
class _Published:
    seq: int
    event_id: str
    subject: str
    stream_seq: int
    published_at: datetime
    republished: int

    @property
    def msg_id(self) -> str:
        return message_id(self.event_id, self.republished)


class _StreamStates:
    """Each stream's state, asked for once in a pass."""

    def __init__(self, ask: Callable[[str], Awaitable[api.StreamInfo]]) -> None:
        self._ask = ask
        self._known: dict[str, api.StreamInfo] = {}

    async def get(self, stream: str) -> api.StreamInfo:
        if stream not in self._known:
            self._known[stream] = await self._ask(stream)
        return self._known[stream]


def _log_lost(lost: Sequence[_Published]) -> None:
    for row in lost:
        log.warning(
            "outbox event lost from its stream; queued to publish again",
            extra={
                "event_id": row.event_id,
                "subject": row.subject,
                "stream_seq": row.stream_seq,
                "published_at": row.published_at.isoformat(),
            },
        )


class OutboxReconciler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        nc: NATS,
        stream_of: Callable[[str], str],
        *,
        grace_s: float = 300.0,
        interval_s: float = 300.0,
        batch_size: int = 5000,
        api_prefix: str = "$JS.API",
        timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._nc = nc
        self._js = nc.jetstream()
        self._stream_of = stream_of
        self._grace = timedelta(seconds=grace_s)
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._api_prefix = api_prefix
        self._timeout_s = timeout_s
        self.lost_total = 0

    async def run(self) -> None:
        """Run a pass every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                report = await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox reconciliation failed", extra={"schema": self._schema})
                continue
            if report.lost:
                log.warning(
                    "outbox reconciliation: events lost from their streams, publishing again",
                    extra={"schema": self._schema, "lost": len(report.lost)},
                )

    async def reconcile(self, *, now: datetime | None = None) -> ReconcileReport:
        """One pass over the published rows still kept; queues the lost ones again."""
        now = now or datetime.now(UTC)
        report = ReconcileReport()
        async with self._pool.acquire() as conn:
            lock = f"{self._schema}.outbox_reconcile"
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock):
                report.skipped = True
                return report
            try:
                await self._pass(conn, now, report)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)
        self.lost_total += len(report.lost)
        return report

    async def _pass(self, conn: asyncpg.Connection, now: datetime, report: ReconcileReport) -> None:
        mark = int(await conn.fetchval("SELECT verified_through FROM outbox_reconcile"))
        streams = _StreamStates(self._stream_info)
        lost = await self._lost_before_mark(conn, mark, now, streams, report)
        new = await self._published(
            conn,
            "seq > $1 AND published_at <= $2 ORDER BY seq LIMIT $3",
            mark,
            now - self._grace,
            self._batch_size,
        )
        found = await self._lookup(new)
        lost += await self._lost_past_mark(new, found, now, streams, report)
        new_mark = await self._next_mark(conn, mark, now, new, found, lost)
        await self._requeue(conn, lost, new_mark, now)
        report.lost = [r.event_id for r in lost]
        report.verified_through = new_mark
        _log_lost(lost)

    async def _lost_before_mark(
        self,
        conn: asyncpg.Connection,
        mark: int,
        now: datetime,
        streams: _StreamStates,
        report: ReconcileReport,
    ) -> list[_Published]:
        """Before the mark: one stream-state request per stream, then a set look-up per row."""
        lost: list[_Published] = []
        for row in await self._published(conn, "seq <= $1", mark):
            stream = await streams.get(self._stream_of(row.subject))
            if self._expired(row, stream, now):
                continue
            report.checked_against_state += 1
            if self._gone_by_state(row, stream):
                lost.append(row)
        return lost

    async def _lost_past_mark(
        self,
        rows: Sequence[_Published],
        found: Sequence[bool],
        now: datetime,
        streams: _StreamStates,
        report: ReconcileReport,
    ) -> list[_Published]:
        """Past the mark: the rows looked up by their sequence whose message was not found
        (and is not expired)."""
        lost: list[_Published] = []
        for row, present in zip(rows, found, strict=True):
            report.checked_one_by_one += 1
            if present:
                continue
            if not self._expired(row, await streams.get(self._stream_of(row.subject)), now):
                lost.append(row)
        return lost

    async def _next_mark(
        self,
        conn: asyncpg.Connection,
        mark: int,
        now: datetime,
        new: Sequence[_Published],
        found: Sequence[bool],
        lost: Sequence[_Published],
    ) -> int:
        """The mark moves over the rows just verified, up to the first row not verified or
        not published yet (so a row published late is still looked up one by one)."""
        blocker = await conn.fetchval(
            """SELECT min(seq) FROM outbox
               WHERE seq > $1 AND (published_at IS NULL OR published_at > $2)""",
            mark,
            now - self._grace,
        )
        verified = {r.seq for r, ok in zip(new, found, strict=True) if ok}
        new_mark = mark
        lost_new = {r.seq for r in lost}
        for row in new:
            if blocker is not None and row.seq >= blocker:
                break
            if row.seq in lost_new or row.seq not in verified:
                break
            new_mark = row.seq
        if lost:
            # A row queued again is looked up one by one once it is published again.
            new_mark = min(new_mark, min(r.seq for r in lost) - 1)
        return new_mark

    async def _requeue(
        self, conn: asyncpg.Connection, lost: Sequence[_Published], new_mark: int, now: datetime
    ) -> None:
        """Queue the lost rows for the relay again and move the mark, in one transaction."""
        async with conn.transaction():
            if lost:
                await conn.execute(
                    """UPDATE outbox SET published_at = NULL, stream_seq = NULL,
                                         republished = republished + 1
                       WHERE seq = ANY($1::bigint[]) AND published_at IS NOT NULL""",
                    [r.seq for r in lost],
                )
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, self._schema)
            await conn.execute(
                "UPDATE outbox_reconcile SET verified_through = $1, last_run_at = $2",
                new_mark,
                now,
            )

    async def _published(
        self, conn: asyncpg.Connection, where: str, *args: object
    ) -> list[_Published]:
        records = await conn.fetch(
            f"""SELECT seq, event_id::text, subject, stream_seq, published_at, republished
                FROM outbox WHERE published_at IS NOT NULL AND stream_seq IS NOT NULL
                AND {where}""",
            *args,
        )
        return [
            _Published(
                seq=r["seq"],
                event_id=r["event_id"],
                subject=r["subject"],
                stream_seq=r["stream_seq"],
                published_at=r["published_at"],
                republished=r["republished"],
            )
            for r in records
        ]

    async def _stream_info(self, stream: str) -> api.StreamInfo:
        """The stream's state with the list of its deleted sequences (nats-py's
        ``stream_info`` does not ask for them)."""
        reply = await self._nc.request(
            f"{self._api_prefix}.STREAM.INFO.{stream}",
            json.dumps({"deleted_details": True}).encode(),
            timeout=self._timeout_s,
        )
        body = json.loads(reply.data)
        if "error" in body:
            raise RuntimeError(f"stream info {stream}: {body['error']}")
        found: api.StreamInfo = api.StreamInfo.from_response(body)
        return found

    @staticmethod
    def _expired(row: _Published, stream: api.StreamInfo, now: datetime) -> bool:
        max_age = stream.config.max_age or 0
        return bool(max_age) and row.published_at < now - timedelta(seconds=max_age)

    @staticmethod
    def _gone_by_state(row: _Published, stream: api.StreamInfo) -> bool:
        state = stream.state
        if stream.created is not None and stream.created > row.published_at:
            return True
        if row.stream_seq < state.first_seq or row.stream_seq > state.last_seq:
            return True
        return row.stream_seq in set(state.deleted or ())

    async def _lookup(self, rows: Sequence[_Published]) -> list[bool]:
        """For each row, whether its stream holds its message (same Nats-Msg-Id) at its seq."""
        limit = asyncio.Semaphore(LOOKUPS_IN_FLIGHT)

        async def present(row: _Published) -> bool:
            async with limit:
                try:
                    msg = await self._js.get_msg(
                        self._stream_of(row.subject), seq=row.stream_seq, direct=True
                    )
                except NotFoundError:
                    return False
                return (msg.headers or {}).get(NATS_MSG_ID) == row.msg_id

        return list(await asyncio.gather(*(present(r) for r in rows)))
