"""Who may do what on the bus, tried with raw nats-py against a real nats-server configured
exactly as `cityhall up` configures it (``cityhall.stack.bus_users`` -> ``auth.conf``,
included by the server's config), with every identity: each service, a terminal, a revoked
terminal and the operator.

For each refused attempt the server's own log is the witness ("Publish Violation",
"Subscription Violation", "authentication error" naming the subject or key); for each
legitimate action the result is checked. The terminal's lifecycle (register, rotate, revoke
while connected) is in tests/integration/payments/test_terminal_identity.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest
import yaml
from nats.aio.client import Client as NATS

from cityhall.commands.payments import write_credentials
from cityhall.embedded import EmbeddedNats, free_port
from cityhall.natsauth import OPERATOR, bus_users, public_key
from cityhall.stack import auth_file, key_directory, write_bus_users
from contracts.subjects import APPLICATIONS, DLQ, NOTIFICATIONS, PAYMENTS, TERMINALS
from services.registry import SERVICE_NAMES, definition
from services.runtime import db as rdb
from services.runtime.service import migrations_for
from services.runtime.settings import ServiceSettings
from tests.integration.helpers import provision, wait_for

REPO = Path(__file__).resolve().parents[2]
FACILITY = "shiminka"
SEED = re.compile(r"\bS[UOA][A-Z2-7]{56}\b")
"""An nkey seed (user, operator or account), as the nkeys encoding writes one."""


@dataclass
class Bus:
    server: EmbeddedNats
    home: Path
    namespace: str
    terminal: dict[str, str]
    revoked: dict[str, str]
    users_file: Path

    def seed_file(self, name: str) -> Path:
        return key_directory(self.home).seed_file(name)

    def violations(self, public_key: str) -> list[str]:
        marker = f'"$G/nkey:{public_key}" - '
        lines = self.server.log_file.read_text(errors="replace").splitlines()
        return [
            line.split(marker, 1)[1] for line in lines if marker in line and "Violation" in line
        ]

    def public_key(self, name: str) -> str:
        return public_key(self.seed_file(name).read_bytes().strip())

    async def connect(self, name: str) -> NATS:
        return await nats.connect(
            self.server.url,
            nkeys_seed=str(self.seed_file(name)),
            inbox_prefix=f"_INBOX_{name}",
            allow_reconnect=False,
        )

    async def connect_terminal(self, creds: dict[str, str]) -> NATS:
        return await nats.connect(
            self.server.url,
            nkeys_seed_str=creds["nkey_seed"],
            inbox_prefix=creds["inbox_prefix"],
            allow_reconnect=False,
            connect_timeout=2,
        )


async def _payments_pool(database_url: str, namespace: str) -> asyncpg.Pool:
    settings = ServiceSettings(service="payments", database_url=database_url, namespace=namespace)
    pool = await rdb.create_pool(database_url, settings.schema_name, min_size=1, max_size=2)
    await rdb.migrate(pool, settings.schema_name, migrations_for(definition("payments")))
    return pool


async def _as_deployed(home: Path, namespace: str, database_url: str) -> str:
    """deploy/k8s's way: the operator's `cityhall nats users --keys` (a process, as typed)
    writes the ConfigMap's auth.conf, mounted beside the chart's config directory and included
    by the path deploy/k8s/nats/values.yaml gives; the include path, relative to the config."""
    values = yaml.safe_load((REPO / "deploy" / "k8s" / "nats" / "values.yaml").read_text())
    include = values["config"]["merge"]["$include"]
    config_dir = home / "nats"  # the chart's /etc/nats-config
    target = (config_dir / include).resolve()
    assert target.parent.name == "nats-auth"
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env |= {"PAYMENTS_DATABASE_URL": database_url, "CITYHALL_NAMESPACE": namespace}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cityhall", "nats", "users",
        "--keys", str(key_directory(home).path), "--out", str(target),
        cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return str(include)


@pytest.fixture(params=["cityhall up", "deploy/k8s"])
async def bus(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    namespace: str,
    database_url: str,
    db: asyncpg.Connection,
) -> AsyncIterator[Bus]:
    """A NATS server whose users are the services', the operator's and payments' terminals'
    keys, configured as `cityhall up` does or as deploy/k8s does (the same users file)."""
    from cityhall.natsauth import new_seed
    from services.payments.handlers.registry import register_terminal, revoke_terminal

    home = tmp_path / "home"
    pool = await _payments_pool(database_url, namespace)
    creds = {}
    try:
        for label in ("terminal", "revoked"):
            seed = new_seed()
            terminal = await register_terminal(
                pool, FACILITY, public_key=public_key(seed), issued_by="test"
            )
            path = write_credentials(home, terminal, seed.decode(), "nats://unused")
            creds[label] = json.loads(path.read_text())
        await revoke_terminal(pool, creds["revoked"]["terminal_id"], "test", "lost")
    finally:
        await pool.close()
    if request.param == "cityhall up":
        # As `cityhall up` does it (synchronously: it reads payments' keys with asyncio.run).
        users = await asyncio.to_thread(
            bus_users, key_directory(home), namespace, {"payments": database_url}
        )
        write_bus_users(home, users)
        include = auth_file(home).name
    else:
        include = await _as_deployed(home, namespace, database_url)
    server = EmbeddedNats(home / "nats", port=free_port(), extra_config=f'include "{include}"\n')
    server.start()
    users_file = (home / "nats" / include).resolve()
    b = Bus(server, home, namespace, creds["terminal"], creds["revoked"], users_file)
    admin = await b.connect(OPERATOR)
    await provision(admin.jetstream(), namespace)
    await admin.close()
    try:
        yield b
    finally:
        server.stop()


async def _attempt(nc: NATS, subject: str, body: bytes = b"{}") -> None:
    """A request the server should refuse: no answer comes (the server drops it)."""
    with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
        await nc.request(subject, body, timeout=0.3)


async def _refused(bus: Bus, name_or_key: str, expected: set[str]) -> None:
    key = name_or_key if name_or_key.startswith("U") else bus.public_key(name_or_key)

    async def seen() -> bool:
        text = "\n".join(bus.violations(key))
        return all(f'"{subject}"' in text for subject in expected)

    assert await wait_for(seen) is True, (expected, bus.violations(key))


def _stream(decl: object, namespace: str) -> str:
    return decl.stream_name(namespace)  # type: ignore[attr-defined]


OWN_EVENT = {
    "applications": "applications.application.submitted.v1",
    "payments": "payments.payment.captured.v1",
    "notifications": "notifications.notification.sent.v1",
}


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_service_is_refused_everything_it_does_not_own(service: str, bus: Bus) -> None:
    ns = bus.namespace
    others = [s for s in OWN_EVENT if s != service]
    own_durables = {d.durable for d in definition(service).bus.durables}
    foreign_durable = next(
        d for s in SERVICE_NAMES if s != service for d in definition(s).bus.durables
    )
    fstream = _stream(foreign_durable.stream, ns)
    terminals = _stream(TERMINALS, ns)
    payments_stream = _stream(PAYMENTS, ns)
    refused = {
        *(f"{ns}.{OWN_EVENT[s]}" for s in others),  # another service's events
        f"{ns}.terminals.{FACILITY}.{bus.terminal['terminal_id']}.tx.v1",  # a terminal's
        f"$JS.API.CONSUMER.CREATE.{terminals}",  # its own consumer on someone's stream
        f"$JS.API.CONSUMER.DURABLE.CREATE.{fstream}.mine",
        f"$JS.API.CONSUMER.DELETE.{fstream}.{foreign_durable.durable}",  # another's consumer
        f"$JS.API.CONSUMER.MSG.NEXT.{fstream}.{foreign_durable.durable}",  # read as another
        f"$JS.API.STREAM.UPDATE.{payments_stream}",  # max_msgs=1 would empty it
        f"$JS.API.STREAM.DELETE.{payments_stream}",
        f"$JS.API.STREAM.PURGE.{payments_stream}",
        f"$JS.API.DIRECT.GET.{terminals}",  # raw terminal messages
        f"$JS.API.STREAM.MSG.GET.{terminals}",
        "$JS.API.STREAM.CREATE.MINE",
    }
    if service != "payments":  # payments erases card numbers from terminals' messages
        refused.add(f"$JS.API.STREAM.MSG.DELETE.{terminals}")
    nc = await bus.connect(service)
    try:
        for subject in sorted(refused):
            if subject.startswith("$JS"):
                await _attempt(nc, subject)
            else:
                await nc.publish(subject, b"{}")
        with contextlib.suppress(nats.errors.Error):
            await nc.subscribe(">")
        with contextlib.suppress(nats.errors.Error):
            await nc.subscribe(f"{ns}.>")
        with contextlib.suppress(nats.errors.Error):
            await nc.subscribe("_INBOX.>")  # others' replies
        await nc.flush()

        # What it needs still works: its consumers' state, its own events.
        js = nc.jetstream(timeout=2)
        for decl in definition(service).bus.durables:
            info = await js.consumer_info(_stream(decl.stream, ns), decl.durable)
            assert info.name in own_durables
        if service in OWN_EVENT:
            ack = await js.publish(f"{ns}.{OWN_EVENT[service]}", b"{}")
            assert ack.stream == _stream(
                {
                    "applications": APPLICATIONS,
                    "payments": PAYMENTS,
                    "notifications": NOTIFICATIONS,
                }[service],
                ns,
            )
    finally:
        await nc.close()
    await _refused(bus, service, refused)
    text = "\n".join(bus.violations(bus.public_key(service)))
    for pattern in (">", f"{ns}.>", "_INBOX.>"):
        assert f'Subscription Violation - Subject "{pattern}"' in text, text


async def test_reporting_reads_the_events_it_projects_and_not_one_terminal_message(
    bus: Bus,
) -> None:
    ns = bus.namespace
    admin = await bus.connect(OPERATOR)
    await admin.jetstream().publish(f"{ns}.{OWN_EVENT['payments']}", b"{}")
    await admin.close()
    nc = await bus.connect("reporting")
    try:
        sub = await nc.jetstream().pull_subscribe_bind(
            "reporting_payments", stream=_stream(PAYMENTS, ns), inbox_prefix=b"_INBOX_reporting."
        )
        [msg] = await sub.fetch(1, timeout=5)
        await msg.ack()
        assert msg.subject == f"{ns}.{OWN_EVENT['payments']}"
        terminals = _stream(TERMINALS, ns)
        for subject in (
            f"$JS.API.DIRECT.GET.{terminals}",
            f"$JS.API.CONSUMER.CREATE.{terminals}",
            f"$JS.API.CONSUMER.MSG.NEXT.{terminals}.payments_terminals",
        ):
            await _attempt(nc, subject, json.dumps({"seq": 1}).encode())
        await nc.publish(f"{ns}.dlq.payments_terminals", b"{}")  # another's dead letters
        await nc.flush()
    finally:
        await nc.close()
    await _refused(
        bus,
        "reporting",
        {
            f"$JS.API.DIRECT.GET.{_stream(TERMINALS, ns)}",
            f"$JS.API.CONSUMER.CREATE.{_stream(TERMINALS, ns)}",
            f"$JS.API.CONSUMER.MSG.NEXT.{_stream(TERMINALS, ns)}.payments_terminals",
            f"{ns}.dlq.payments_terminals",
        },
    )


async def test_a_terminal_publishes_its_own_subjects_only(bus: Bus) -> None:
    ns = bus.namespace
    own = f"{ns}.{bus.terminal['subject']}"
    other = f"{ns}.terminals.{FACILITY}.{bus.revoked['terminal_id']}.tx.v1"
    nc = await bus.connect_terminal(bus.terminal)
    key = public_key(bus.terminal["nkey_seed"].encode())
    try:
        ack = await nc.jetstream(timeout=2).publish(own, b"{}")
        assert ack.stream == _stream(TERMINALS, ns)
        await nc.publish(other, b"{}")
        await nc.publish(f"{ns}.{OWN_EVENT['payments']}", b"{}")
        await _attempt(nc, f"$JS.API.STREAM.INFO.{_stream(TERMINALS, ns)}")
        await _attempt(nc, f"$JS.API.CONSUMER.CREATE.{_stream(TERMINALS, ns)}")
        with contextlib.suppress(nats.errors.Error):
            await nc.subscribe(">")
        await nc.flush()
    finally:
        await nc.close()
    await _refused(
        bus,
        key,
        {
            other,
            f"{ns}.{OWN_EVENT['payments']}",
            f"$JS.API.STREAM.INFO.{_stream(TERMINALS, ns)}",
            f"$JS.API.CONSUMER.CREATE.{_stream(TERMINALS, ns)}",
            ">",
        },
    )


async def test_a_revoked_terminal_cannot_log_in(bus: Bus) -> None:
    with pytest.raises(nats.errors.Error):
        await bus.connect_terminal(bus.revoked)
    log = bus.server.log_file.read_text(errors="replace")
    assert "authentication error" in log


async def test_the_operator_may_do_everything(bus: Bus) -> None:
    nc = await bus.connect(OPERATOR)
    try:
        js = nc.jetstream(timeout=2)
        info = await js.stream_info(_stream(DLQ, bus.namespace))
        assert info.config.name == _stream(DLQ, bus.namespace)
        await js.add_stream(name=f"{bus.namespace.upper()}_SCRATCH", subjects=["scratch.x"])
        await js.delete_stream(f"{bus.namespace.upper()}_SCRATCH")
    finally:
        await nc.close()
    assert bus.violations(bus.public_key(OPERATOR)) == []


def test_no_credential_file_grants_more_than_its_owner_needs(bus: Bus) -> None:
    """Each secret file holds one owner's seed, mode 0600; the server's files hold none."""
    keys = key_directory(bus.home).path
    assert keys.stat().st_mode & 0o777 == 0o700
    seeds = sorted(keys.glob("*.nk"))
    assert {p.stem for p in seeds} == {*SERVICE_NAMES, OPERATOR}
    for path in seeds:
        assert path.stat().st_mode & 0o777 == 0o600, path
        lines = path.read_text().split()
        assert len(lines) == 1, path
        assert lines[0].startswith("SU"), path
    for path in (bus.home / "terminals").glob("*.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
        doc = json.loads(path.read_text())
        assert set(doc) == {
            "terminal_id",
            "facility_code",
            "kind",
            "nats_url",
            "nkey_seed",
            "subject",
            "settlement_subject",
            "inbox_prefix",
        }
        assert "@" not in doc["nats_url"]  # no user or password in the URL
    for path in (bus.users_file, bus.home / "nats" / "nats-server.conf"):
        text = path.read_text()
        assert path.stat().st_mode & 0o777 == 0o600
        assert not SEED.search(text), path
        assert "password" not in text
    # Every seed file's key is a user of the server, allowed what its permissions say.
    conf = bus.users_file.read_text()
    for name in (*SERVICE_NAMES, OPERATOR):
        assert bus.public_key(name) in conf
