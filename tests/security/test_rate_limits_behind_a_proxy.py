"""Rate limits as they hold behind the ingress, on real servers:

* the client's address comes from X-Forwarded-For only when the peer is a trusted proxy
  (``FORWARDED_ALLOW_IPS``); from anyone else the header is ignored, so a caller cannot pick
  a fresh address per request to escape its limit;
* with ``<SERVICE>_RATE_LIMIT_STORAGE=async+redis://…`` the replicas of a service share their
  counts (a real redis-server, started here), and two services keep theirs apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from cityhall.embedded import free_port, port_is_open
from services.registry import definition
from services.runtime.server import build_app, http_server_config
from tests.conftest import make_settings
from tests.integration.helpers import provision, wait_for
from tests.tokens import applicant, city_env


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL, or a redis-server of this machine's (Debian's package; `make test` installs
    it when missing) on a free port, keeping nothing on disk."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    assert binary, "install Debian's redis-server (make test does)"
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=(folder / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(200):
            if port_is_open("127.0.0.1", port):
                break
            assert proc.poll() is None, (folder / "redis.log").read_text()
            time.sleep(0.05)
        yield f"async+redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def served(name: str, settings: Any) -> AsyncIterator[str]:
    """The service behind a real uvicorn server configured as `cityhall serve` configures it."""
    app = build_app(definition(name), settings)
    server = uvicorn.Server(http_server_config(app, settings))
    server.config.loop = "asyncio"  # this test's own event loop
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: asyncio.sleep(0, server.started), timeout=30)
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
async def provisioned(nc: Any, namespace: str, db: Any) -> str:
    await provision(nc.jetstream(), namespace)
    return namespace


def _settings(nats_url: str, database_url: str, namespace: str, **extra: Any) -> Any:
    return make_settings(
        "applications", nats_url, database_url, namespace, http_port=free_port(), **extra
    )


@pytest.mark.parametrize(
    ("trusted", "header_counts"), [("127.0.0.1", True), ("10.9.8.7/32", False)]
)
async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    trusted: str,
    header_counts: bool,
    nats_url: str,
    database_url: str,
    provisioned: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    city_env(monkeypatch, APPLICATIONS_RATE_LIMIT_ANONYMOUS="2/minute")
    settings = _settings(nats_url, database_url, provisioned, forwarded_allow_ips=trusted)
    async with served("applications", settings) as url, httpx.AsyncClient(base_url=url) as http:

        async def as_client(address: str) -> int:
            response = await http.get("/procedures", headers={"X-Forwarded-For": address})
            return response.status_code

        assert [await as_client("203.0.113.7") for _ in range(2)] == [200, 200]
        assert await as_client("203.0.113.7") == 429
        # Another client behind the proxy: its own count only if the proxy is trusted; from an
        # untrusted peer the header is the caller's word, and every request is the peer's.
        assert await as_client("203.0.113.8") == (200 if header_counts else 429)


async def test_replicas_share_counts_in_redis_and_services_keep_theirs_apart(
    redis_url: str,
    nats_url: str,
    database_url: str,
    provisioned: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    city_env(
        monkeypatch,
        APPLICATIONS_RATE_LIMIT_APPLICANT="4/minute",
        APPLICATIONS_RATE_LIMIT_STORAGE=redis_url,
        PAYMENTS_RATE_LIMIT_APPLICANT="4/minute",
        PAYMENTS_RATE_LIMIT_STORAGE=redis_url,
    )
    me = applicant()
    one = _settings(nats_url, database_url, provisioned)
    two = _settings(nats_url, database_url, provisioned)
    payments = make_settings("payments", nats_url, database_url, provisioned, http_port=free_port())
    async with (
        served("applications", one) as first,
        served("applications", two) as second,
        served("payments", payments) as third,
        httpx.AsyncClient() as http,
    ):
        codes = [
            (await http.get(f"{replica}/applications", headers=me)).status_code
            for replica in (first, second, first, second)
        ]
        assert codes == [200] * 4
        # The fifth request is one too many, whichever replica it reaches.
        for replica in (first, second):
            assert (await http.get(f"{replica}/applications", headers=me)).status_code == 429
        # Payments counts this applicant apart (its own limit in the same Redis).
        other = await http.get(f"{third}/payment-requests/{uuid.uuid4()}", headers=me)
        assert other.status_code == 404  # served (no such request), not 429
