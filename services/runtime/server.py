"""A service's HTTP process: the FastAPI app, its server's configuration and ``serve``.

``build_app`` makes the app a service (or its relay alone) answers with: its routes, the
request limits, gzip for large answers, the 503 for a database that is down, /healthz and
/readyz, and the ``Runtime`` started and stopped by the app's lifespan. ``serve`` runs it
under uvicorn until SIGTERM/SIGINT; ``freeze_heap`` is the opt-in interpreter tuning of such a
process.
"""

from __future__ import annotations

import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.middleware.gzip import GZipMiddleware

from services.runtime import auth, http_limits
from services.runtime.http_errors import DATABASE_UNAVAILABLE, database_unavailable
from services.runtime.lifecycle import Role, Runtime
from services.runtime.outbox import outbox_pending
from services.runtime.service import ServiceDefinition
from services.runtime.settings import ServiceSettings
from services.runtime.telemetry import setup_logging, shutdown_tracing

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
    # The API console (/docs) with its assets served by the service: city networks (LGWAN)
    # are closed, and a CDN is unreachable from them. No ReDoc: its bundle loads a logo from
    # its CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title=f"cityhall {defn.name}" + (" outbox relay" if role == "relay" else ""),
        description=defn.description,
        version="0.1.0",
        lifespan=_lifespan(runtime, freeze_heap_after_start),
    )
    app.state.runtime = runtime
    _add_request_limits(app, defn)
    # Large answers (a year of KPIs, open data) gzipped for clients that accept it, on every
    # request: level 1, most of level 9's saving for a tenth of its time (docs/benchmarks.md).
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=1)
    if defn.router is not None and role == "service":
        app.include_router(defn.router)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, database_unavailable)
    _add_operations_routes(app, defn, runtime)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    return app


def _lifespan(
    runtime: Runtime, freeze_heap_after_start: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the runtime started before the first request, stopped after the
    last."""

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

    return lifespan


def _add_request_limits(app: FastAPI, defn: ServiceDefinition) -> None:
    """Who may call and how much (auth.caller_dependency reads these); bad settings stop here."""
    limits = http_limits.load_http_limits(defn.name)
    app.state.rate_limits = http_limits.RateLimits(limits, defn.name)
    app.state.applicant_tokens = auth.load_applicant_tokens()
    app.add_middleware(http_limits.BodySizeLimit, max_bytes=limits.max_body_bytes)


def _add_operations_routes(app: FastAPI, defn: ServiceDefinition, runtime: Runtime) -> None:
    """/healthz (the process is alive) and /readyz (NATS and the database are reachable)."""

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


def http_server_config(app: FastAPI, settings: ServiceSettings) -> uvicorn.Config:
    """How a service's HTTP server runs (`cityhall serve`, and the tests that try it)."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # uvloop and httptools (C): the event loop and HTTP parsing cost less CPU per
        # request than asyncio's loop and h11 (docs/benchmarks.md).
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
