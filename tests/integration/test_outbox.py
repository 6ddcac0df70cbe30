"""The transactional outbox and its relay, on real PostgreSQL and JetStream."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from nats.js import JetStreamContext

from contracts.subjects import APPLICATIONS
from services.runtime.outbox import OutboxRelay, OutboxRow, add_events
from tests.integration.helpers import (
    application_stream_ids,
    provision,
    raw_publisher,
    runtime_pool,
    submitted,
    wait_for,
)


@pytest.fixture
async def pool(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> AsyncIterator[asyncpg.Pool]:
    p = await runtime_pool(database_url, f"{namespace}_outbox")
    yield p
    await p.close()


async def test_rows_committed_while_no_relay_runs_are_published_in_commit_order(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    events = [submitted() for _ in range(25)]
    for i in range(0, 25, 5):
        async with pool.acquire() as conn, conn.transaction():
            await add_events(conn, events[i : i + 5])

    relay = OutboxRelay(pool, f"{namespace}_outbox", raw_publisher(js, namespace), batch_size=7)
    while await relay.drain_once():
        pass

    assert await application_stream_ids(js, namespace) == [e.id for e in events]
    assert await relay.pending() == 0
    seqs = await pool.fetch("SELECT stream_seq FROM outbox ORDER BY seq")
    assert [r["stream_seq"] for r in seqs] == list(range(1, 26))


async def test_rolled_back_transaction_leaves_no_event(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)

    async def failing_change() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await add_events(conn, [submitted()])
            raise RuntimeError("state change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    relay = OutboxRelay(pool, f"{namespace}_outbox", raw_publisher(js, namespace))
    assert await relay.drain_once() == 0
    assert await application_stream_ids(js, namespace) == []


async def test_a_row_published_twice_is_stored_once_by_jetstream(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    """A relay that dies between the PubAck and marking the row publishes it again."""
    await provision(js, namespace)
    env = submitted()
    async with pool.acquire() as conn, conn.transaction():
        await add_events(conn, [env])
    relay = OutboxRelay(pool, f"{namespace}_outbox", raw_publisher(js, namespace))
    assert await relay.drain_once() == 1
    await pool.execute("UPDATE outbox SET published_at = NULL")  # as if never marked
    assert await relay.drain_once() == 1
    assert await application_stream_ids(js, namespace) == [env.id]


async def test_failed_publish_keeps_the_row_for_the_next_round(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    async with pool.acquire() as conn, conn.transaction():
        await add_events(conn, [submitted()])
    publish = raw_publisher(js, namespace)
    calls = 0

    async def flaky(rows):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            return [TimeoutError("no PubAck") for _ in rows]
        return await publish(rows)

    relay = OutboxRelay(pool, f"{namespace}_outbox", flaky, poll_interval_s=0.05)
    assert await relay.drain_once() == 0
    assert await relay.pending() == 1
    assert await relay.drain_once() == 1
    assert await relay.pending() == 0


async def test_notify_wakes_the_relay_before_its_poll_interval(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    relay = OutboxRelay(
        pool, f"{namespace}_outbox", raw_publisher(js, namespace), poll_interval_s=30
    )
    task = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: asyncio.sleep(0, relay.is_leader))
        await asyncio.sleep(0.1)  # the relay is now waiting (up to 30 s) for a NOTIFY
        env = submitted()
        async with pool.acquire() as conn, conn.transaction():
            await add_events(conn, [env])

        async def published() -> bool:
            return await application_stream_ids(js, namespace) == [env.id]

        await wait_for(published, timeout=5)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 5)


async def test_only_one_relay_per_schema_publishes(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    publish = raw_publisher(js, namespace)
    first = OutboxRelay(pool, f"{namespace}_outbox", publish, poll_interval_s=0.05)
    second = OutboxRelay(pool, f"{namespace}_outbox", publish, poll_interval_s=0.05)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        await wait_for(lambda: asyncio.sleep(0, first.is_leader or second.is_leader))
        await asyncio.sleep(0.3)
        assert [first.is_leader, second.is_leader].count(True) == 1
    finally:
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_published_rows_are_kept_until_their_retention_ends(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    async with pool.acquire() as conn, conn.transaction():
        await add_events(conn, [submitted(), submitted()])
    publish = raw_publisher(js, namespace)
    keep = OutboxRelay(pool, f"{namespace}_outbox", publish, retention_hours=1)
    assert await keep.drain_once() == 2
    assert await keep.delete_expired() == 0
    async with pool.acquire() as conn, conn.transaction():
        await add_events(conn, [submitted()])  # unpublished: never deleted
    expire = OutboxRelay(pool, f"{namespace}_outbox", publish, retention_hours=0)
    assert await expire.delete_expired() == 2
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_outbox_row_carries_the_trace_context_and_exact_payload(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    env = submitted()
    with tracer.start_as_current_span("request") as span:
        async with pool.acquire() as conn, conn.transaction():
            await add_events(conn, [env])
        trace_id = format(span.get_span_context().trace_id, "032x")
    row = await pool.fetchrow("SELECT trace_headers::text, payload FROM outbox")
    assert trace_id in json.loads(row["trace_headers"])["traceparent"]
    assert row["payload"] == env.body().decode()


async def test_a_published_row_carries_the_envelopes_headers_and_its_trace_headers_only(
    js: JetStreamContext, namespace: str
) -> None:
    """The relay's headers come from the envelope's one builder: the CloudEvents attributes,
    ``Nats-Msg-Id``, and of the row's trace headers only W3C ones (a value's CR and LF become
    spaces and its ends are trimmed, by nats-py's publish)."""
    await provision(js, namespace)

    def row(seq: int, trace_headers: dict[str, str]) -> OutboxRow:
        return OutboxRow(
            seq=seq,
            event_id=str(uuid.uuid4()),
            subject="applications.application.submitted.v1",
            ce_type="jp.koriyama.cityhall.test.v1",
            ce_source="/cityhall/tests",
            ce_subject="frames",
            ce_time=datetime.now(UTC),
            trace_headers=trace_headers,
            payload="{}",
        )

    rows = [
        row(1, {"tracestate": " a=1\r\nPUB x 1\r\n "}),
        row(2, {"bad key": "x", "tracestate": "b=2"}),
    ]
    results = await raw_publisher(js, namespace)(rows)

    assert results == [1, 2]
    stream = APPLICATIONS.stream_name(namespace)
    first = await js.get_msg(stream, seq=1)
    second = await js.get_msg(stream, seq=2)
    assert first.headers is not None
    assert second.headers is not None
    assert first.headers["tracestate"] == "a=1  PUB x 1"
    assert first.headers["ce-id"] == rows[0].event_id
    assert first.headers["Nats-Msg-Id"] == rows[0].event_id
    assert second.headers["ce-id"] == rows[1].event_id
    assert second.headers["tracestate"] == "b=2"
    assert "bad key" not in second.headers
    envelope_headers = set(submitted().headers())
    assert envelope_headers <= set(first.headers)
