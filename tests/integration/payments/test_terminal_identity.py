"""A terminal's identity through its life, with the operator's own commands
(`cityhall terminals register | rotate | revoke`, run as processes) against a running
nats-server configured as `cityhall up` configures it: each change takes effect on the running
server within seconds, without a restart, and disconnects nobody else."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from cityhall.embedded import EmbeddedNats, free_port
from cityhall.natsauth import OPERATOR, bus_users
from cityhall.stack import auth_file, key_directory, write_bus_users
from tests.integration.helpers import provision, wait_for

REPO = Path(__file__).resolve().parents[3]


class Operator:
    def __init__(self, home: Path, nats_url: str, database_url: str, namespace: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
        self.env |= {
            "CITYHALL_HOME": str(home),
            "NATS_URL": nats_url,
            "DATABASE_URL": database_url,
            "CITYHALL_NAMESPACE": namespace,
        }

    async def run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cityhall",
            "terminals",
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()


@pytest.fixture
async def stack(
    tmp_path: Path, namespace: str, database_url: str, db: asyncpg.Connection
) -> AsyncIterator[tuple[EmbeddedNats, Operator]]:
    home = tmp_path / "home"
    users = await asyncio.to_thread(
        bus_users, key_directory(home), namespace, {"payments": database_url}
    )
    write_bus_users(home, users)
    server = EmbeddedNats(
        home / "nats", port=free_port(), extra_config=f'include "{auth_file(home).name}"\n'
    )
    server.start()
    admin = await nats.connect(server.url, nkeys_seed=str(key_directory(home).seed_file(OPERATOR)))
    await provision(admin.jetstream(), namespace)
    await admin.close()
    try:
        yield server, Operator(home, server.url, database_url, namespace)
    finally:
        server.stop()


async def connect(creds: dict[str, Any], url: str, errors: list[Exception]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    return await nats.connect(
        url,
        nkeys_seed_str=creds["nkey_seed"],
        inbox_prefix=creds["inbox_prefix"],
        allow_reconnect=False,
        connect_timeout=2,
        error_cb=on_error,
    )


async def refused(creds: dict[str, Any], url: str) -> bool:
    try:
        nc = await connect(creds, url, [])
    except nats.errors.Error:
        return True
    await nc.close()
    return False


async def test_a_registered_terminal_publishes_with_the_file_it_was_given(
    stack: tuple[EmbeddedNats, Operator], namespace: str
) -> None:
    server, operator = stack
    path = Path(await operator.run("register", "shiminka"))
    assert path.stat().st_mode & 0o777 == 0o600
    creds = json.loads(path.read_text())
    assert creds["nats_url"] == server.url  # no user or password in it
    nc = await connect(creds, server.url, [])
    try:
        ack = await nc.jetstream(timeout=2).publish(f"{namespace}.{creds['subject']}", b"{}")
        assert ack.seq == 1
    finally:
        await nc.close()


async def test_revoking_a_terminal_disconnects_it_within_seconds_and_nobody_else(
    stack: tuple[EmbeddedNats, Operator], namespace: str
) -> None:
    server, operator = stack
    lost = json.loads(Path(await operator.run("register", "shiminka")).read_text())
    kept = json.loads(Path(await operator.run("register", "shiminka")).read_text())
    lost_errors: list[Exception] = []
    lost_nc = await connect(lost, server.url, lost_errors)
    kept_nc = await connect(kept, server.url, [])
    service = await nats.connect(
        server.url,
        nkeys_seed=str(key_directory(operator.home).seed_file("payments")),
        inbox_prefix="_INBOX_payments",
        allow_reconnect=False,
    )
    try:
        out = await operator.run("revoke", lost["terminal_id"], "--reason", "stolen")
        assert "revoked" in out

        async def closed() -> bool:
            return lost_nc.is_closed

        assert await wait_for(closed, timeout=10) is True
        assert not (operator.home / "terminals" / f"{lost['terminal_id']}.json").exists()
        assert await refused(lost, server.url)
        # Everyone else is still connected and still works.
        assert kept_nc.is_connected
        assert service.is_connected
        ack = await kept_nc.jetstream(timeout=2).publish(f"{namespace}.{kept['subject']}", b"{}")
        assert ack.stream.endswith("_TERMINALS")
        log = server.log_file.read_text()
        assert "Reloaded: authorization" in log
    finally:
        for nc in (lost_nc, kept_nc, service):
            if not nc.is_closed:
                await nc.close()


async def test_rotating_a_key_refuses_the_old_one_and_admits_the_new(
    stack: tuple[EmbeddedNats, Operator], namespace: str, db: asyncpg.Connection
) -> None:
    server, operator = stack
    path = Path(await operator.run("register", "bijutsukan"))
    old = json.loads(path.read_text())
    old_nc = await connect(old, server.url, [])
    assert Path(await operator.run("rotate", old["terminal_id"])) == path
    new = json.loads(path.read_text())
    assert new["nkey_seed"] != old["nkey_seed"]

    async def old_closed() -> bool:
        return old_nc.is_closed

    assert await wait_for(old_closed, timeout=10) is True
    assert await refused(old, server.url)
    nc = await connect(new, server.url, [])
    try:
        ack = await nc.jetstream(timeout=2).publish(f"{namespace}.{new['subject']}", b"{}")
        assert ack.seq >= 1
    finally:
        await nc.close()
    # The record: both keys, who issued them, the old one revoked as rotated.
    rows = await db.fetch(
        f'SELECT issued_by, revoked_by, reason FROM "{namespace}_payments".terminal_keys '
        "WHERE terminal_id = $1 ORDER BY issued_at",
        old["terminal_id"],
    )
    assert [r["reason"] for r in rows] == ["rotated", None]
    assert all(r["issued_by"] for r in rows)


async def test_revoking_twice_or_an_unknown_terminal_is_clear(
    stack: tuple[EmbeddedNats, Operator],
) -> None:
    _server, operator = stack
    creds = json.loads(Path(await operator.run("register", "shiminka")).read_text())
    await operator.run("revoke", creds["terminal_id"])
    assert "no key in force" in await operator.run("revoke", creds["terminal_id"])
    with pytest.raises(AssertionError, match="no terminal 'nowhere-t09' is registered"):
        await operator.run("revoke", "nowhere-t09")
