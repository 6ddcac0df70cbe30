"""The service runner: one function builds a service from its definition and runs it.

A service declares what it is (``ServiceDefinition``: name, migrations, HTTP routes, consumers);
the runner does the rest in a fixed order: logging and tracing, database pool and migrations,
NATS connection, streams and consumers, the outbox relay, the subscribers, then HTTP. On
SIGTERM/SIGINT it stops taking HTTP requests, lets the subscribers finish the batch in hand,
stops the relay and closes the pool.

A process has one of two roles: ``service`` (``cityhall serve``: routes, consumers, background
jobs and, unless ``OUTBOX_RELAY=false``, the outbox relay) or ``relay`` (``cityhall relay``: the
outbox relay and its reconciliation job alone, with /healthz and /readyz). Relays of one
service elect one publisher with an advisory lock, so any number may run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import asyncpg
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from faststream.nats.security import NatsNKey
from nats.js import JetStreamContext
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.middleware.gzip import GZipMiddleware

from contracts.envelope import Event
from contracts.subjects import StreamDecl
from services.runtime import auth, db, http_limits
from services.runtime.consumer import Admit, EventConsumer, Handler, Prefetching, Scrub
from services.runtime.dlq import DeadLetters
from services.runtime.outbox import (
    PUBLISH_ASYNC_MAX_PENDING,
    OutboxRelay,
    PublishBatch,
    jetstream_publisher,
    outbox_pending,
)
from services.runtime.pull import PullLoop
from services.runtime.reconcile import OutboxReconciler
from services.runtime.settings import ServiceSettings
from services.runtime.streams import ConsumerDecl, require_consumer, subject_streams
from services.runtime.telemetry import (
    setup_logging,
    setup_tracing,
    shutdown_tracing,
)

log = logging.getLogger(__name__)

STOP_STEP_TIMEOUT_S = 10.0
GRACEFUL_TIMEOUT_S = 30.0  # how long a subscriber's stop waits for its handlers in flight
T = TypeVar("T")


@dataclass(frozen=True)
class ConsumerBinding:
    """A durable consumer and the handler of each event type it takes."""

    decl: ConsumerDecl
    handlers: Mapping[type[Event], Handler]
    admit: Admit | None = None
    """Optional subject check for messages from outside cityhall (see consumer.Admit)."""
    scrub: Scrub | None = None
    """Optional masking of dead-lettered bodies (see consumer.Scrub)."""


BackgroundJob = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class BusAccess:
    """A service's place on the bus, declared once: where its relay publishes its events, the
    durable consumers it pulls from (created by the operator, never by the service), the
    streams whose size it watches and those it may erase a message from."""

    publishes: StreamDecl | None = None
    durables: Sequence[ConsumerDecl] = ()
    watches: Sequence[StreamDecl] = ()
    erases_from: Sequence[StreamDecl] = ()


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    package: str
    """The service's Python package; its ``migrations/`` folder holds its SQL."""
    router: APIRouter | None = None
    """HTTP routes; they reach the running service through ``Depends(service_context)``."""
    consumers: Callable[[ServiceContext], Sequence[ConsumerBinding]] = lambda _ctx: ()
    bus: BusAccess = field(default_factory=lambda: BusAccess())
    """What the service may do on NATS; the operator provisions its consumers and gives its
    identity exactly these rights (`cityhall provision`, docs/security.md)."""
    startup: Callable[[ServiceContext], Awaitable[None]] | None = None
    """Run once at start-up, after the migrations and before any consumer or route is served
    (reference data the handlers rely on)."""
    background: Callable[[ServiceContext], Sequence[BackgroundJob]] = lambda _ctx: ()
    """Long-running jobs (expiry sweeps, retry workers); started after the subscribers,
    cancelled first at shutdown. Each should loop until cancelled."""
    description: str = ""
    db_settings: Mapping[str, str] = field(default_factory=dict)
    """PostgreSQL settings for the service's sessions (e.g. reporting's plan_cache_mode)."""
    settings: Sequence[Callable[[], Any]] = ()
    """The service's own settings, read when the app is built (before the server starts), so
    a bad value stops the process with one line per variable instead of a traceback from the
    first request or handler that needs it; each is then ``ctx.provide``-d by its type."""


@dataclass
class ServiceContext:
    """What a running service's routes and handlers are given."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    broker: NatsBroker
    relay: OutboxRelay | None = None
    reconciler: OutboxReconciler | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    _provided: dict[type, Any] = field(default_factory=dict, repr=False)
    _js: JetStreamContext | None = field(default=None, repr=False)

    def provide(self, kind: type[T], build: Callable[[], T]) -> T:
        """The running service's one ``kind`` (its own settings, clients), built on first use."""
        if kind not in self._provided:
            self._provided[kind] = build()
        found: T = self._provided[kind]
        return found

    def provided(self, kind: type[T]) -> T | None:
        """The ``kind`` built by ``provide``, if it was."""
        found: T | None = self._provided.get(kind)
        return found

    @property
    def js(self) -> JetStreamContext:
        """JetStream on the broker's connection (connected in ``Runtime.start``)."""
        if self._js is None:
            self._js = self.broker.connection.jetstream(
                publish_async_max_pending=PUBLISH_ASYNC_MAX_PENDING
            )
        return self._js


def migrations_for(defn: ServiceDefinition) -> list[db.Migration]:
    return db.load_migrations("runtime", "services.runtime") + db.load_migrations(
        defn.name, defn.package
    )


async def prepare_database(settings: ServiceSettings, defn: ServiceDefinition) -> list[str]:
    """Create the service's schema and apply its migrations (used by `cityhall migrate`)."""
    pool = await db.create_pool(settings.dsn, settings.schema_name, min_size=1, max_size=1)
    try:
        return await db.migrate(pool, settings.schema_name, migrations_for(defn))
    finally:
        await pool.close()


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
        # batch span cost about 5 % of a consumer's CPU.
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
        ctx._provided.update(self._own_settings)
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
        for job in self.defn.background(ctx) if service else ():
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
            delivery_limit=binding.decl.delivery_limit,
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


def service_context(request: Request) -> ServiceContext:
    """FastAPI dependency: the running service's context."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # the connection broke, or could not be made
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, crashed
    asyncpg.InterfaceError,  # "connection is closed"
    OSError,  # no socket to connect to (ConnectionRefusedError, FileNotFoundError)
)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is down or restarting: 503 with Retry-After, not a 500. Nothing of the
    request was committed (a commit that fails is not acknowledged), so the client may try
    again, with the same Idempotency-Key where the route takes one."""
    if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) and not any(
        "asyncpg" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)
    ):
        raise exc  # an OSError of something else: a plain 500
    log.warning(
        "database unavailable; answered 503",
        extra={"path": request.url.path, "error": type(exc).__name__},
    )
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


GZIP_MIN_BYTES = 1400
"""Smaller bodies fit in one packet as they are."""


def build_app(
    defn: ServiceDefinition,
    settings: ServiceSettings,
    *,
    role: Role = "service",
    freeze_heap_after_start: bool = False,
) -> FastAPI:
    """The service's HTTP app: its routes (none for a ``relay``) plus /healthz and /readyz;
    runtime in the lifespan. ``freeze_heap_after_start``: for a process of its own
    (``serve``) whose settings ask for it (``GC_TUNING``), see ``freeze_heap``."""
    runtime = Runtime(defn, settings, role=role)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await runtime.start()
        app.state.ctx = ctx
        if freeze_heap_after_start:
            freeze_heap()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=f"cityhall {defn.name}" + (" outbox relay" if role == "relay" else ""),
        description=defn.description,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    # Who may call and how much (auth.caller_dependency reads these); bad settings stop here.
    limits = http_limits.load_http_limits(defn.name)
    app.state.rate_limits = http_limits.RateLimits(limits, defn.name)
    app.state.applicant_tokens = auth.load_applicant_tokens()
    app.add_middleware(http_limits.BodySizeLimit, max_bytes=limits.max_body_bytes)
    # Large answers (a year of KPIs, open data) gzipped for clients that accept it, on every
    # request: level 1, most of level 9's saving for a tenth of its time (docs/benchmarks.md).
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=1)
    if defn.router is not None and role == "service":
        app.include_router(defn.router)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, database_unavailable)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": defn.name}

    @app.get("/readyz", tags=["operations"], summary="NATS and the database are reachable")
    async def readyz() -> JSONResponse:
        problems = await runtime.readiness()
        if problems:
            return JSONResponse({"status": "unready", "problems": problems}, status_code=503)
        ctx = runtime.ctx
        assert ctx is not None
        body: dict[str, Any] = {"status": "ready", "service": defn.name}
        # the backlog, whether this process's relay or a `cityhall relay` one publishes it
        body["outbox_pending"] = await outbox_pending(ctx.pool)
        return JSONResponse(body)

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    return app


def http_server_config(app: FastAPI, settings: ServiceSettings) -> uvicorn.Config:
    """How a service's HTTP server runs (`cityhall serve`, and the tests that try it)."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # uvloop and httptools (C): the event loop and HTTP parsing cost about a fifth less
        # CPU per request than asyncio's loop and h11 (docs/benchmarks.md).
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=20,
        # The client's address (rate limits count anonymous callers by it) comes from
        # X-Forwarded-For only when the peer is one of these proxies (the ingress).
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def serve(defn: ServiceDefinition, settings: ServiceSettings, *, role: Role = "service") -> None:
    """Run one service (or its outbox relay alone) until SIGTERM/SIGINT (what `cityhall serve
    <service>` and `cityhall relay <service>` do)."""
    setup_logging(settings.service, settings.log_level, settings.log_format)
    app = build_app(defn, settings, role=role, freeze_heap_after_start=settings.gc_tuning)
    config = http_server_config(app, settings)
    # uvicorn re-raises the stop signal to the handler that was there before it, once it has
    # shut down; with the default SIGTERM action the process would die by the signal (exit
    # -15/143) before the `finally` below flushes the spans. A SIGTERM stop is a clean exit.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.Server(config).run()
    finally:
        shutdown_tracing()  # flush spans still in the batch processor


GC_THRESHOLDS = (50_000, 20, 10)
"""The young generation is collected per 50,000 tracked objects, not Python's 700: a consumer
batch's objects are freed by reference counting right after the batch, so young collections
mostly promoted them for nothing. Cyclic garbage waits longer to be found."""


def freeze_heap() -> None:
    """Opt-in interpreter tuning (``GC_TUNING``, docs/operations.md): take what the started
    process holds for good (modules, models, routes, pools) out of the collector's sight, so
    an oldest-generation collection no longer walks it, and collect the young generation less
    often (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
