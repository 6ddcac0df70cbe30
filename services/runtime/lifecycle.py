"""The runner: starts a service from its definition and stops it, in a fixed order.

``Runtime.start`` sets up tracing, the database pool and migrations, the NATS connection, the
durable consumers and their pull loops, the outbox relay and the background jobs. ``stop``
ends them the other way round, each step bounded in time: the jobs, the pull loops (the
batches in hand are applied and acked), the relay, NATS, the pool. A process has one of two roles:
``service`` (``cityhall serve``: routes, consumers, background jobs and, unless
``OUTBOX_RELAY=false``, the outbox relay) or ``relay`` (``cityhall relay``: the outbox relay
and its reconciliation job alone). Relays of one service elect one publisher with an advisory
lock, so any number may run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import asyncpg
from faststream.nats import NatsBroker
from faststream.nats.security import NatsNKey

from services.runtime import db
from services.runtime.consumer import EventConsumer
from services.runtime.dlq import DeadLetters
from services.runtime.inbox import keep_inbox_pruned
from services.runtime.outage import Availability
from services.runtime.outbox import OutboxRelay, PublishBatch, jetstream_publisher
from services.runtime.prefetch import Prefetching
from services.runtime.pull import PullLoop
from services.runtime.reconcile import OutboxReconciler
from services.runtime.service import (
    ConsumerBinding,
    ServiceContext,
    ServiceDefinition,
    migrations_for,
)
from services.runtime.settings import ServiceSettings
from services.runtime.streams import ConsumerDecl, require_consumer, subject_streams
from services.runtime.telemetry import setup_tracing

log = logging.getLogger(__name__)

STOP_STEP_TIMEOUT_S = 10.0
GRACEFUL_TIMEOUT_S = 30.0  # how long a subscriber's stop waits for its handlers in flight
T = TypeVar("T")

Role = Literal["service", "relay"]
"""What a process runs: the service (``cityhall serve``), or its outbox relay alone
(``cityhall relay``)."""


class Runtime:
    """Owns a service's connections and background tasks between start() and stop()."""

    def __init__(
        self, defn: ServiceDefinition, settings: ServiceSettings, *, role: Role = "service"
    ) -> None:
        self.defn = defn
        self.settings = settings
        self.role = role
        own = [read() for read in defn.settings]  # SettingsError: stop before serving
        self._own_settings: dict[type, Any] = {type(value): value for value in own}
        self.ctx: ServiceContext | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._jobs: list[asyncio.Task[None]] = []
        self._feeds: list[Prefetching] = []
        self._pulls: list[PullLoop] = []
        self.availability: Availability | None = None
        self.started_at = time.monotonic()

    async def start(self) -> ServiceContext:
        s = self.settings
        setup_tracing(
            s.otel_service_name or s.service,
            s.otel_exporter_otlp_endpoint,
            sampler_from_env=s.otel_traces_sampler is not None,
        )
        pool = await db.create_pool(
            s.dsn,
            s.schema_name,
            min_size=s.db_pool_min,
            max_size=s.db_pool_max,
            app_name=s.service,
            server_settings=self.defn.db_settings,
        )
        try:
            return await self._start(pool)
        except BaseException:
            # A start that fails (bad settings, a server gone) closes what it opened.
            if self.ctx is None:
                await pool.close()
            else:
                await self.stop()
            raise

    async def _start(self, pool: asyncpg.Pool) -> ServiceContext:
        s = self.settings
        await db.migrate(pool, s.schema_name, migrations_for(self.defn))
        # No FastStream telemetry middleware: the runtime makes the spans that matter itself
        # (one CONSUMER span per event or batch run, parented by the producer's traceparent;
        # the relay's PRODUCER spans), and the middleware's per-message baggage and extra
        # batch span are CPU a consumer would spend for nothing (docs/benchmarks.md).
        broker = NatsBroker(
            s.nats_url.split(","),
            logger=logging.getLogger("faststream"),
            log_level=logging.DEBUG,
            graceful_timeout=GRACEFUL_TIMEOUT_S,
            name=f"cityhall-{s.service}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            security=NatsNKey(s.nats_nkey_file) if s.nats_nkey_file is not None else None,
            inbox_prefix=s.nats_inbox_prefix,
        )
        ctx = ServiceContext(settings=s, pool=pool, broker=broker)
        for kind, value in self._own_settings.items():
            ctx.provide(kind, _built(value))
        self.ctx = ctx
        await broker.connect()
        service = self.role == "service"
        if self.defn.startup is not None and service:
            await self.defn.startup(ctx)
        for binding in self.defn.consumers(ctx) if service else ():
            await require_consumer(ctx.js, self._subscribe(ctx, binding), s.namespace)
        await broker.start()
        for pull in self._pulls:
            await pull.start()
        if not service or s.outbox_relay:
            self._start_relay(ctx)
        jobs = [*self.defn.background(ctx), *self._runtime_jobs(ctx)] if service else []
        for job in jobs:
            self._jobs.append(asyncio.create_task(_keep_running(job), name=job.__name__))
        if not service:
            started = "outbox relay started"
        elif s.outbox_relay:
            started = "service started"
        else:
            started = "service started; its outbox relay runs elsewhere (OUTBOX_RELAY=false)"
        log.info(started, extra={"namespace": s.namespace, "schema": s.schema_name})
        return ctx

    def _start_relay(self, ctx: ServiceContext) -> None:
        """The outbox relay (a candidate for the service's one publisher) and, unless turned
        off, the reconciliation job that checks the streams kept what it published."""
        s = self.settings
        ctx.relay = OutboxRelay(
            ctx.pool,
            s.schema_name,
            self._publisher(ctx),
            batch_size=s.outbox_batch_size,
            poll_interval_s=s.outbox_poll_interval_s,
            retention_hours=s.outbox_retention_hours,
            kill_before_publish=s.fault_kill_before_publish,
            kill_after_publish=s.fault_kill_after_publish,
        )
        self._relay_task = asyncio.create_task(ctx.relay.run(), name="outbox-relay")
        ctx.reconciler = OutboxReconciler(
            ctx.pool,
            s.schema_name,
            ctx.broker.connection,
            subject_streams(s.namespace),
            grace_s=s.outbox_reconcile_grace_s,
            interval_s=s.outbox_reconcile_interval_s or 300.0,
        )
        if s.outbox_reconcile_interval_s > 0:
            self._jobs.append(
                asyncio.create_task(_keep_running(ctx.reconciler.run), name="outbox-reconcile")
            )

    def _runtime_jobs(self, ctx: ServiceContext) -> list[Callable[[], Awaitable[None]]]:
        """The runtime's own jobs in a service with consumers: inbox pruning."""
        s = ctx.settings
        if not self._pulls:
            return []

        async def prune_inbox() -> None:
            await keep_inbox_pruned(ctx.pool, s.inbox_retention_days, s.inbox_prune_interval_s)

        return [prune_inbox]

    def _availability(self, ctx: ServiceContext) -> Availability:
        """One per process: the database is down for every consumer at once."""
        if self.availability is None:
            pool = ctx.pool
            self.availability = Availability(
                lambda: pool.fetchval("SELECT 1"), ctx.settings.consumer_outage_probe_s
            )
        return self.availability

    def _subscribe(self, ctx: ServiceContext, binding: ConsumerBinding) -> ConsumerDecl:
        s = ctx.settings
        if binding.decl not in self.defn.bus.durables:
            raise ValueError(
                f"consumer {binding.decl.durable!r} is not among {self.defn.name}'s "
                "bus.durables: declare it there so that `cityhall provision` creates it"
            )
        decl = ConsumerDecl(
            durable=binding.decl.durable,
            stream=binding.decl.stream,
            subjects=binding.decl.subjects,
            max_deliver=s.consumer_max_deliver,
            delivery_limit=s.consumer_delivery_limit,
            ack_wait_s=binding.decl.ack_wait_s,
            max_ack_pending=binding.decl.max_ack_pending,
        )
        consumer = EventConsumer(
            decl=decl,
            handlers=binding.handlers,
            pool=ctx.pool,
            dead_letters=DeadLetters(ctx.js, s.namespace),
            admit=binding.admit,
            scrub=binding.scrub,
            backoff_s=s.consumer_backoff,
            availability=self._availability(ctx),
        )
        ctx.consumers.append(consumer)
        feed = Prefetching(consumer)
        self._feeds.append(feed)

        self._pulls.append(
            PullLoop(
                ctx.js,
                durable=decl.durable,
                stream=decl.stream.stream_name(s.namespace),
                inbox_prefix=s.nats_inbox_prefix,
                batch_size=s.consumer_batch_size,
                max_wait_s=s.consumer_max_wait_s,
                submit=feed.submit,
                availability=self._availability(ctx),
            )
        )
        return decl

    def _publisher(self, ctx: ServiceContext) -> PublishBatch:
        namespace = ctx.settings.namespace
        return jetstream_publisher(ctx.js, namespace, subject_streams(namespace))

    async def stop(self) -> None:
        """Stop in order; every step is bounded, so a stuck step is logged, not a hung pod."""
        ctx = self.ctx
        if ctx is None:
            return
        for job in self._jobs:
            job.cancel()
        if self._jobs:
            done, stuck = await asyncio.wait(self._jobs, timeout=STOP_STEP_TIMEOUT_S)
            # A job that failed as it stopped: its error is taken here, not reported later by
            # asyncio as "exception was never retrieved".
            for job in done:
                if not job.cancelled():
                    job.exception()
            for job in stuck:  # it swallowed its cancellation: leave it, say which
                log.error(
                    "background job did not stop when cancelled", extra={"job": job.get_name()}
                )
        # Stop fetching, then apply and ack the batches already fetched while the connection
        # is still open (broker.stop closes it).
        for pull in self._pulls:
            await _bounded(f"{pull.durable} pull", pull.stop(), GRACEFUL_TIMEOUT_S + 5)
        await asyncio.gather(*(feed.close() for feed in self._feeds))
        if self.availability is not None:
            await self.availability.close()
        if ctx.relay is not None:
            ctx.relay.stop()
        if self._relay_task is not None:
            await _bounded("outbox relay", self._relay_task, STOP_STEP_TIMEOUT_S)
        await _bounded("NATS connection", ctx.broker.stop(), STOP_STEP_TIMEOUT_S)
        if not await _bounded("database pool", ctx.pool.close(), STOP_STEP_TIMEOUT_S):
            ctx.pool.terminate()  # a connection still held: close them all at once
        log.info("service stopped")

    async def readiness(self) -> dict[str, str]:
        """Problems by component; empty when ready."""
        problems: dict[str, str] = {}
        ctx = self.ctx
        if ctx is None:
            return {"service": "starting"}
        try:
            await asyncio.wait_for(ctx.pool.fetchval("SELECT 1"), timeout=2)
        except Exception as exc:
            problems["database"] = f"unreachable: {exc!r}"
        if not await ctx.broker.ping(timeout=2):
            problems["nats"] = "not connected"
        return problems


def _built(value: T) -> Callable[[], T]:
    """A ``build`` for ``ServiceContext.provide`` of a value made already (own settings)."""
    return lambda: value


async def _bounded(step: str, aw: Awaitable[Any], timeout_s: float | None) -> bool:
    """Await one shutdown step for at most ``timeout_s``; False (and a log line) if it did not
    finish in time or failed. Shutdown goes on either way, unless stop itself is cancelled."""
    try:
        await asyncio.wait_for(aw, timeout=timeout_s)
    except TimeoutError:
        log.error("shutdown step did not finish in time", extra={"step": step, "s": timeout_s})
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # stop was cancelled, not the step (a cancelled relay task ends this way)
        return False
    except Exception:
        return False
    return True


async def _keep_running(job: Callable[[], Awaitable[None]]) -> None:
    """Run a background job; if it fails, log and start it again after a pause."""
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job failed; restarting in 5 s", extra={"job": job.__name__})
            await asyncio.sleep(5)
