"""Rebuild the read-models from the event log (再構築): replay every stream from its first event.

Projections are functions of the event log, so the read-models can always be thrown away and
built again (after a projection bug is fixed, or a new KPI is added). ``rebuild``:

1. creates a **shadow schema** (``<schema>_rebuild``) with the same migrations: empty tables;
2. reads each stream reporting consumes from the beginning with an **ephemeral** pull consumer
   (filtered to the same subjects as the live durable, no acks), and applies each fetched batch
   with the **same projection functions and inbox** as the live consumer, in one transaction;
3. **swaps** in one transaction: locks the live inbox and read-models (the live consumer's next
   commit waits), drains what was published meanwhile into the shadow, then replaces the live
   rows with the shadow's and commits. Readers see the old figures or the new, never a mix.

Why this is exact: the live consumer writes its inbox (for payment events, whose projection is
keyed, it takes the inbox's lock) before its projections in one transaction, so while the lock
is held every event it has committed is in the stream up to the last sequence the drain
reached. After the swap its inbox holds every replayed application event id and the
read-models every payment's key, so events it fetches again are recognised as duplicates and
events it has not seen yet are applied once.

An event that is not a valid contract is skipped (the live consumer has dead-lettered it
already); one whose projection fails is skipped and counted, so one bad event cannot stop a
rebuild, and the report says how many.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import EVENT_TYPES
from contracts.envelope import Envelope, EnvelopeError, RawEvent
from services.reporting import store
from services.reporting.app import DEFINITION
from services.reporting.subscribers import BINDINGS
from services.runtime import db
from services.runtime.consumer import Batched, Handler, is_keyed
from services.runtime.service import ConsumerBinding, migrations_for
from services.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Called as ``progress(consumer, applied_now, total_known)`` after each batch."""

FETCH_BATCH = 500
FETCH_WAIT_S = 0.5


class RebuildError(RuntimeError):
    """The rebuild could not start or finish; the live read-models were left as they were."""


@dataclass
class StreamReplay:
    """Reading one durable's subjects from the start of its stream, into the shadow schema."""

    binding: ConsumerBinding
    js: JetStreamContext
    namespace: str
    applied: int = 0
    skipped_invalid: int = 0
    failed: list[str] = field(default_factory=list)
    pending_at_start: int = 0
    _sub: Any = None
    _consumer: str = ""

    @property
    def name(self) -> str:
        return self.binding.decl.durable

    @property
    def stream(self) -> str:
        return self.binding.decl.stream.stream_name(self.namespace)

    async def open(self) -> None:
        subjects = [f"{self.namespace}.{s}" for s in self.binding.decl.subjects]
        config = ConsumerConfig(
            description=f"reporting rebuild of {self.name}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=300.0,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
            mem_storage=True,
        )
        info = await self.js.add_consumer(self.stream, config)
        self.pending_at_start = info.num_pending or 0
        self._consumer = info.name
        self._sub = await self.js.pull_subscribe_bind(consumer=info.name, stream=self.stream)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            try:
                await self.js.delete_consumer(self.stream, self._consumer)
            except Exception as exc:  # it expires by itself after inactive_threshold
                log.info("rebuild consumer not deleted", extra={"error": repr(exc)})

    async def pending(self) -> int:
        info = await self._sub.consumer_info()
        return int(info.num_pending or 0)

    async def drain(self, shadow: asyncpg.Pool, progress: Progress | None) -> None:
        """Apply everything the stream holds for these subjects now."""
        while True:
            try:
                msgs = await self._sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            if msgs:
                await self._apply(shadow, msgs)
                if progress is not None:
                    progress(self.name, len(msgs), self.pending_at_start)
                continue
            if await self.pending() == 0:
                return

    async def _apply(self, shadow: asyncpg.Pool, msgs: Sequence[Msg]) -> None:
        items: list[tuple[Envelope[Any], Handler]] = []
        by_type = {model.event_type: (model, h) for model, h in self.binding.handlers.items()}
        for msg in msgs:
            try:
                raw = RawEvent.from_headers(msg.headers)
                if raw.type not in EVENT_TYPES:
                    raise EnvelopeError(f"unknown event type {raw.type!r}")
                entry = by_type.get(raw.type)
                if entry is None:
                    continue
                model, handler = entry
                items.append((raw.parse(model, msg.data), handler))
            except EnvelopeError:
                self.skipped_invalid += 1
        try:
            async with shadow.acquire() as conn, conn.transaction():
                self.applied += await _apply_items(conn, self.name, items)
        except Exception:
            for item in items:  # one by one, so one bad event cannot stop the rebuild
                try:
                    async with shadow.acquire() as conn, conn.transaction():
                        self.applied += await _apply_items(conn, self.name, [item])
                except Exception as exc:
                    if db.is_transient(exc):
                        raise
                    self.failed.append(f"{item[0].id}: {type(exc).__name__}: {exc}")


async def _apply_items(
    conn: asyncpg.Connection, consumer: str, items: Sequence[tuple[Envelope[Any], Handler]]
) -> int:
    """The live consumer's inbox-then-projection step, for a batch already decoded: events
    of a ``keyed`` projection get no inbox row and are always handed to it (it skips what it
    applied before by its own keys), as in ``EventConsumer``."""
    if not items:
        return 0
    tracked = [(env, h) for env, h in items if not is_keyed(h)]
    new_ids = (
        {
            r["event_id"]
            for r in await conn.fetch(
                """INSERT INTO inbox (consumer, event_id, ce_type)
                   SELECT $1, t.id, t.type FROM unnest($2::text[], $3::text[]) AS t(id, type)
                   ON CONFLICT DO NOTHING RETURNING event_id""",
                consumer,
                [env.id for env, _ in tracked],
                [env.type for env, _ in tracked],
            )
        }
        if tracked
        else set()
    )
    # As the live consumer does: each run of new events sharing a Batched projection in one
    # call (set-based), any other handler one event at a time.
    applied = 0
    run: list[Envelope[Any]] = []
    run_handler: Batched | None = None
    for env, handler in items:
        if not is_keyed(handler):
            if env.id not in new_ids:
                continue
            new_ids.discard(env.id)
        if run and handler is not run_handler:
            await _apply_run(conn, run_handler, run)
            run = []
        if isinstance(handler, Batched):
            run.append(env)
            run_handler = handler
        else:
            await handler(conn, env)
        applied += 1
    if run:
        await _apply_run(conn, run_handler, run)
    return applied


async def _apply_run(
    conn: asyncpg.Connection, handler: Batched | None, run: Sequence[Envelope[Any]]
) -> None:
    assert handler is not None
    await handler.apply(conn, run)


@dataclass(frozen=True)
class RebuildReport:
    applied: dict[str, int]
    skipped_invalid: int
    failed: list[str]


def shadow_schema(live: str) -> str:
    return f"{live}_rebuild"


def rebuild_lock(live: str) -> str:
    """The advisory lock key one rebuild of ``live`` holds (not the migrator's: that one is
    the schema's own name)."""
    return f"rebuild of {live}"


async def rebuild(
    settings: ServiceSettings,
    *,
    bindings: Sequence[ConsumerBinding] = BINDINGS,
    progress: Progress | None = None,
    on_start: Callable[[dict[str, int]], None] | None = None,
) -> RebuildReport:
    """Replay the streams into a shadow schema and swap its rows in; see the module doc."""
    live, shadow = settings.schema_name, shadow_schema(settings.schema_name)
    guard = await asyncpg.connect(settings.dsn)
    try:
        if not await guard.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", rebuild_lock(live)
        ):
            raise RebuildError(f"another rebuild of schema {live} is running")
        return await _rebuild(settings, live, shadow, bindings, progress, on_start)
    finally:
        await guard.close()  # the session's advisory lock goes with it


async def _rebuild(
    settings: ServiceSettings,
    live: str,
    shadow: str,
    bindings: Sequence[ConsumerBinding],
    progress: Progress | None,
    on_start: Callable[[dict[str, int]], None] | None,
) -> RebuildReport:
    await _drop_schema(settings.dsn, shadow)
    shadow_pool = await db.create_pool(settings.dsn, shadow, min_size=1, max_size=2)
    live_pool = await db.create_pool(settings.dsn, live, min_size=1, max_size=1)
    # The operator's identity (operator.env, the Job's secret): a replay creates consumers of
    # its own on the business streams, which reporting's service identity may not.
    nkey = {"nkeys_seed": str(settings.nats_nkey_file)} if settings.nats_nkey_file else {}
    nc = await nats.connect(settings.nats_url.split(","), name="cityhall-reporting-rebuild", **nkey)
    replays = [StreamReplay(b, nc.jetstream(), settings.namespace) for b in bindings]
    try:
        migrations = migrations_for(DEFINITION)
        await db.migrate(shadow_pool, shadow, migrations)
        await db.migrate(live_pool, live, migrations)
        for replay in replays:
            await replay.open()
        if on_start is not None:
            on_start({r.name: r.pending_at_start for r in replays})
        for replay in replays:
            await replay.drain(shadow_pool, progress)
        tables = ["inbox", *store.READ_MODEL_TABLES]
        async with live_pool.acquire() as conn, conn.transaction():
            # inbox first: the live consumer takes it first too, so neither waits on the other
            await conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            for replay in replays:
                await replay.drain(shadow_pool, progress)
            await conn.execute(f"TRUNCATE {', '.join(tables)}")
            for table in tables:
                await conn.execute(f'INSERT INTO {table} SELECT * FROM "{shadow}".{table}')
            # the API's kept answers are of the rows just replaced (versions only go up: the
            # shadow's own count from its first batch would meet old numbers)
            await conn.execute("UPDATE projection_versions SET version = version + 1")
    finally:
        for replay in replays:
            await replay.close()
        await nc.close()
        await shadow_pool.close()
        await live_pool.close()
    await _drop_schema(settings.dsn, shadow)
    report = RebuildReport(
        applied={r.name: r.applied for r in replays},
        skipped_invalid=sum(r.skipped_invalid for r in replays),
        failed=[f for r in replays for f in r.failed],
    )
    log.info("read-models rebuilt", extra={"applied": report.applied, "failed": len(report.failed)})
    return report


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
