"""The outbox reconciliation job on real PostgreSQL and JetStream: events the stream
acknowledged and then lost are found and published again, once, under a new Nats-Msg-Id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from typer.testing import CliRunner

from cityhall.cli import app
from contracts.envelope import Envelope, Event
from contracts.subjects import APPLICATIONS
from services.runtime.outbox import OutboxRelay, add_events
from services.runtime.reconcile import OutboxReconciler
from services.runtime.streams import subject_streams
from tests.integration.helpers import provision, raw_publisher, runtime_pool, submitted


@pytest.fixture
async def pool(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> AsyncIterator[asyncpg.Pool]:
    p = await runtime_pool(database_url, f"{namespace}_outbox")
    yield p
    await p.close()


async def stored(js: JetStreamContext, namespace: str) -> list[tuple[str, str]]:
    """(ce-id, Nats-Msg-Id) of every message the stream holds, in order."""
    stream = APPLICATIONS.stream_name(namespace)
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq=seq)
        except Exception:  # deleted
            continue
        assert msg.headers is not None
        found.append((msg.headers["ce-id"], msg.headers["Nats-Msg-Id"]))
    return found


async def published(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str, count: int
) -> tuple[list[Envelope[Event]], OutboxRelay]:
    await provision(js, namespace)
    events = [submitted() for _ in range(count)]
    async with pool.acquire() as conn, conn.transaction():
        await add_events(conn, events)
    relay = OutboxRelay(pool, f"{namespace}_outbox", raw_publisher(js, namespace))
    while await relay.drain_once():
        pass
    return events, relay


def later(seconds: float = 600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_deleted_messages_are_found_and_published_again_once(
    pool: asyncpg.Pool, js: JetStreamContext, nc: NATS, namespace: str
) -> None:
    events, relay = await published(pool, js, namespace, 30)
    stream = APPLICATIONS.stream_name(namespace)
    reconciler = OutboxReconciler(pool, f"{namespace}_outbox", nc, subject_streams(namespace))

    # Nothing lost yet: every row is looked up once and the mark moves past all of them.
    clean = await reconciler.reconcile(now=later())
    assert clean.lost == []
    assert clean.checked_one_by_one == 30
    assert clean.verified_through == 30

    # The stream loses three acknowledged events (one before the mark is checked against the
    # stream's state, which is what a later pass does).
    for seq in (3, 17, 30):
        assert await js.delete_msg(stream, seq)
    found = await reconciler.reconcile(now=later())
    assert sorted(found.lost) == sorted(events[i].id for i in (2, 16, 29))
    assert found.checked_against_state == 30
    assert found.verified_through == 2
    assert await relay.pending() == 3

    while await relay.drain_once():
        pass
    held = await stored(js, namespace)
    # Each event is in the stream once; the three copies under a new message id (JetStream's
    # duplicate window would have dropped a re-publish under the old one).
    assert sorted(ce_id for ce_id, _ in held) == sorted(e.id for e in events)
    again = {ce_id: msg_id for ce_id, msg_id in held if ce_id != msg_id}
    assert again == {events[i].id: f"{events[i].id}:1" for i in (2, 16, 29)}

    # The next pass (after the grace period) finds nothing more and re-verifies the copies.
    # The mark went back to before the first lost row: the copies are looked up one by one.
    after = await reconciler.reconcile(now=later(1200))
    assert after.lost == []
    assert (after.checked_against_state, after.checked_one_by_one) == (2, 28)
    assert after.verified_through == 30
    assert await relay.pending() == 0


async def test_a_stream_deleted_and_created_again_gets_every_kept_event_back(
    pool: asyncpg.Pool, js: JetStreamContext, nc: NATS, namespace: str
) -> None:
    events, relay = await published(pool, js, namespace, 12)
    reconciler = OutboxReconciler(pool, f"{namespace}_outbox", nc, subject_streams(namespace))
    assert (await reconciler.reconcile(now=later())).verified_through == 12

    await js.delete_stream(APPLICATIONS.stream_name(namespace))
    await provision(js, namespace)
    found = await reconciler.reconcile(now=later())
    assert sorted(found.lost) == sorted(e.id for e in events)
    while await relay.drain_once():
        pass
    assert [ce_id for ce_id, _ in await stored(js, namespace)] == [e.id for e in events]


async def test_rows_inside_the_grace_period_are_not_judged_yet(
    pool: asyncpg.Pool, js: JetStreamContext, nc: NATS, namespace: str
) -> None:
    _events, relay = await published(pool, js, namespace, 5)
    await js.delete_msg(APPLICATIONS.stream_name(namespace), 2)
    reconciler = OutboxReconciler(
        pool, f"{namespace}_outbox", nc, subject_streams(namespace), grace_s=300
    )
    early = await reconciler.reconcile()
    assert early.lost == []
    assert early.checked_one_by_one == 0
    assert early.verified_through == 0
    late = await reconciler.reconcile(now=later())
    assert len(late.lost) == 1
    assert late.verified_through == 1  # stops before the lost row until it is re-verified
    assert await relay.pending() == 1


async def test_two_reconcilers_on_one_schema_do_not_run_at_once(
    pool: asyncpg.Pool, js: JetStreamContext, nc: NATS, namespace: str
) -> None:
    await published(pool, js, namespace, 1)
    schema = f"{namespace}_outbox"
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"{schema}.outbox_reconcile")
        try:
            reconciler = OutboxReconciler(pool, schema, nc, subject_streams(namespace))
            report = await reconciler.reconcile()
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext($1))", f"{schema}.outbox_reconcile"
            )
    assert report.skipped


async def test_the_operator_command_finds_and_queues_what_a_stream_lost(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    namespace: str,
    nats_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, relay = await published(pool, js, namespace, 4)
    await js.delete_msg(APPLICATIONS.stream_name(namespace), 3)
    for name, value in {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "CITYHALL_NAMESPACE": namespace,
        "CITYHALL_DB_SCHEMA": f"{namespace}_outbox",
    }.items():
        monkeypatch.setenv(name, value)
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["outbox", "reconcile", "applications", "--grace-s", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "applications: 4 looked up one by one" in result.output
    assert "1 lost, queued to publish again" in result.output
    assert f"lost: {events[2].id}" in result.output
    assert await relay.pending() == 1
