"""What a service declares and what its routes and handlers are given.

A service declares what it is in a ``ServiceDefinition`` (name, migrations, HTTP routes,
consumers, its place on the bus); its routes and handlers reach the running service through a
``ServiceContext`` (settings, pool, broker, the things it ``provide``-s). The runner that starts
and stops a service from its definition is in ``lifecycle.py``; its HTTP process (the app,
/healthz and /readyz, ``serve``) in ``server.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from fastapi import APIRouter, Request
from faststream.nats import NatsBroker
from nats.js import JetStreamContext

from contracts.envelope import Event
from contracts.subjects import StreamDecl
from services.runtime import db
from services.runtime.consumer import Admit, EventConsumer, Handler, Scrub
from services.runtime.outbox import PUBLISH_ASYNC_MAX_PENDING, OutboxRelay
from services.runtime.reconcile import OutboxReconciler
from services.runtime.settings import ServiceSettings
from services.runtime.streams import ConsumerDecl

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


def service_context(request: Request) -> ServiceContext:
    """FastAPI dependency: the running service's context."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx
