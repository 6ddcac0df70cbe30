"""NATS authentication: a terminal publishes only on its own subject, with its own credentials.

A real nats-server is started by the test with the same users and permissions `cityhall up`
gives the embedded one (cityhall.stack, services.payments.local); the payments service logs
in as its own user, and terminals registered while it runs are added by a config reload.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from cityhall.embedded import EmbeddedNats, NatsUser, authorization_config, free_port
from cityhall.stack import admin_nats_user, service_nats_user
from contracts.payments import terminal_subject
from contracts.subjects import TERMINALS
from services.payments.handlers import TerminalCredentials, register_terminal
from services.payments.local import terminal_nats_user
from services.registry import definition
from services.runtime.service import Runtime, build_app
from tests.conftest import RunningService, make_settings
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import (
    assert_ledger_balances,
    terminal_publishes,
    terminal_settles,
    transaction,
)

PAYMENTS_PASSWORD = "payments-secret"
ADMIN_PASSWORD = "admin-secret"


@pytest.fixture
def auth_server(tmp_path: Path, namespace: str) -> Iterator[EmbeddedNats]:
    users = [
        service_nats_user(namespace, "payments", PAYMENTS_PASSWORD),
        admin_nats_user(ADMIN_PASSWORD),
    ]
    server = EmbeddedNats(
        tmp_path / "nats", port=free_port(), extra_config=authorization_config(users)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def as_dict(creds: TerminalCredentials) -> dict[str, str]:
    return dataclasses.asdict(creds) | {
        "inbox_prefix": creds.inbox_prefix,
        "settlement_subject": creds.settlement_subject,
    }


async def add_users(server: EmbeddedNats, namespace: str, users: list[NatsUser]) -> None:
    base = [
        service_nats_user(namespace, "payments", PAYMENTS_PASSWORD),
        admin_nats_user(ADMIN_PASSWORD),
    ]
    server.extra_config = authorization_config(base + users)
    server.reload()

    async def can_log_in() -> bool:
        try:
            nc = await nats.connect(
                server.url,
                user=users[-1].user,
                password=users[-1].password,
                allow_reconnect=False,
                connect_timeout=1,
            )
        except Exception:
            return False
        await nc.close()
        return True

    await wait_for(can_log_in)


def server_violations(server: EmbeddedNats, user: str) -> list[str]:
    """What the server refused ``user`` (from its log: the server's word, not the client's)."""
    found = []
    for line in server.log_file.read_text(errors="replace").splitlines():
        if f'"$G/user:{user}"' in line and "Violation" in line:
            found.append(line.split(f'"$G/user:{user}" - ', 1)[1].strip())
    return found


class Terminal:
    """A terminal's own NATS connection."""

    def __init__(self, creds: TerminalCredentials) -> None:
        self.creds = creds
        self.nc: NATS | None = None

    async def connect(self, url: str) -> Terminal:
        self.nc = await nats.connect(
            url,
            user=self.creds.nats_user,
            password=self.creds.nats_password,
            inbox_prefix=self.creds.inbox_prefix,
            allow_reconnect=False,
        )
        return self

    async def publish(self, namespace: str, payload: dict[str, Any], subject: str) -> int:
        assert self.nc is not None
        return await terminal_publishes(
            self.nc.jetstream(timeout=1.0), namespace, payload, subject=subject
        )


@pytest.fixture
async def payments(
    auth_server: EmbeddedNats, database_url: str, namespace: str, db: Any
) -> AsyncIterator[RunningService]:
    """The payments service, logged in to the auth server as its own user."""
    import httpx

    settings = make_settings(
        "payments",
        auth_server.url,
        database_url,
        namespace,
        nats_user="payments",
        nats_password=PAYMENTS_PASSWORD,
    )
    app = build_app(definition("payments"), settings)
    runtime: Runtime = app.state.runtime
    ctx = await runtime.start()
    app.state.ctx = ctx
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payments")
    try:
        yield RunningService(runtime, ctx, client)
        await assert_ledger_balances(ctx.pool)
    finally:
        await runtime.stop()


@pytest.fixture
async def admin(auth_server: EmbeddedNats) -> AsyncIterator[NATS]:
    nc = await nats.connect(auth_server.url, user="cityhall", password=ADMIN_PASSWORD)
    yield nc
    await nc.close()


async def test_a_terminal_cannot_publish_as_another_terminal_or_for_another_facility(
    auth_server: EmbeddedNats, payments: RunningService, namespace: str, admin: NATS
) -> None:
    civic = await register_terminal(payments.pool, "shiminka")
    museum = await register_terminal(payments.pool, "bijutsukan")
    await add_users(
        auth_server,
        namespace,
        [terminal_nats_user(namespace, as_dict(t)) for t in (civic, museum)],
    )
    terminal = await Terminal(civic).connect(auth_server.url)

    own = transaction(civic.terminal_id, "OK1")
    assert await terminal.publish(namespace, own, civic.subject) > 0
    assert terminal.nc is not None
    day = {
        "batch_id": "S1",
        "facility_code": "shiminka",
        "business_date": "2026-11-24",
        "processor": "PayPay",
        "lines": [{"method": "qr", "brand": "PayPay", "count": 1, "amount_yen": 300}],
    }
    await terminal_settles(
        terminal.nc.jetstream(timeout=1.0), namespace, civic.terminal_id, day
    )  # its own settlement subject is allowed too
    as_museum = transaction(museum.terminal_id, "BAD1", facility_code="bijutsukan")
    with pytest.raises(nats.errors.TimeoutError):
        await terminal.publish(namespace, as_museum, museum.subject)
    other_facility = transaction(civic.terminal_id, "BAD2", facility_code="bijutsukan")
    with pytest.raises(nats.errors.TimeoutError):
        await terminal.publish(
            namespace, other_facility, terminal_subject("bijutsukan", civic.terminal_id)
        )

    async def posted() -> int:
        return int(await payments.pool.fetchval("SELECT count(*) FROM payments"))

    assert await wait_for(posted) == 1
    await asyncio.sleep(0.3)
    info = await admin.jetstream().stream_info(TERMINALS.stream_name(namespace))
    assert info.state.messages == 2  # the refused publishes never reached the stream
    assert await posted() == 1
    violations = server_violations(auth_server, civic.nats_user)
    assert violations == [
        f'Publish Violation - Subject "{namespace}.{museum.subject}"',
        f'Publish Violation - Subject "{namespace}.'
        f'{terminal_subject("bijutsukan", civic.terminal_id)}"',
    ]


async def test_a_terminal_cannot_read_other_clients_replies_or_log_in_with_a_wrong_password(
    auth_server: EmbeddedNats, payments: RunningService, namespace: str
) -> None:
    civic = await register_terminal(payments.pool, "shiminka")
    await add_users(auth_server, namespace, [terminal_nats_user(namespace, as_dict(civic))])
    terminal = await Terminal(civic).connect(auth_server.url)
    assert terminal.nc is not None
    await terminal.nc.subscribe("_INBOX.>")  # where the services' deliveries arrive
    await terminal.nc.flush()

    async def refused() -> list[str]:
        return server_violations(auth_server, civic.nats_user)

    [violation] = await wait_for(refused)
    assert violation.startswith('Subscription Violation - Subject "_INBOX.>"')

    impostor = dataclasses.replace(civic, nats_password="guessed")
    with pytest.raises(nats.errors.Error):  # Authorization Violation (or no server left)
        await Terminal(impostor).connect(auth_server.url)


async def test_a_service_cannot_publish_another_service_s_events(
    auth_server: EmbeddedNats, namespace: str
) -> None:
    nc = await nats.connect(auth_server.url, user="payments", password=PAYMENTS_PASSWORD)
    try:
        await nc.publish(f"{namespace}.applications.application.submitted.v1", b"{}")
        await nc.publish(f"{namespace}.payments.payment.captured.v1", b"{}")
        await nc.flush()
    finally:
        await nc.close()

    async def refused() -> list[str]:
        return server_violations(auth_server, "payments")

    assert await wait_for(refused) == [
        f'Publish Violation - Subject "{namespace}.applications.application.submitted.v1"'
    ]
