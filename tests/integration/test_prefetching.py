"""A consumer fed through ``Prefetching``: the next batch is fetched and decoded while the
previous one's transaction runs, yet batches are applied one at a time, in stream order, and
acked only after their commit; on close what is queued is applied and what comes later is
given back. Real JetStream and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from contracts import ApplicationSubmittedV1
from contracts.subjects import APPLICATIONS
from services.runtime.consumer import Batched, EventConsumer
from services.runtime.dlq import DeadLetters
from services.runtime.prefetch import Prefetching
from services.runtime.streams import ConsumerDecl, provision_consumer
from tests.integration.helpers import (
    provision,
    publish_envelope,
    runtime_pool,
    submitted,
    wait_for,
)

DECL = ConsumerDecl(
    durable="prefetch_probe", stream=APPLICATIONS, subjects=(ApplicationSubmittedV1.subject,)
)


@pytest.fixture
async def pool(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> AsyncIterator[asyncpg.Pool]:
    p = await runtime_pool(database_url, f"{namespace}_prefetch")
    await p.execute("CREATE TABLE seen (n serial PRIMARY KEY, event_id text UNIQUE)")
    yield p
    await p.close()


class Recorder:
    """A slow batched handler that notes when each batch starts and ends, and how many run at
    once."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = 0
        self.most_at_once = 0

    async def apply(self, conn: asyncpg.Connection, events: Any) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.log.append(f"apply {events[0].id}")
        await conn.executemany("INSERT INTO seen (event_id) VALUES ($1)", [(e.id,) for e in events])
        await asyncio.sleep(0.5)  # a transaction that takes a while
        self.log.append(f"applied {events[0].id}")
        self.running -= 1


async def published(js: JetStreamContext, namespace: str, count: int) -> list[str]:
    await provision(js, namespace)
    envs = [submitted() for _ in range(count)]
    for env in envs:
        await publish_envelope(js, namespace, env)
    return [e.id for e in envs]


async def consumer_and_sub(
    js: JetStreamContext, namespace: str, pool: asyncpg.Pool, recorder: Recorder
) -> tuple[EventConsumer, Any]:
    consumer = EventConsumer(
        decl=DECL,
        handlers={ApplicationSubmittedV1: Batched(recorder.apply)},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
    )
    await provision_consumer(js, DECL, namespace)
    sub = await js.pull_subscribe_bind(DECL.durable, stream=APPLICATIONS.stream_name(namespace))
    return consumer, sub


async def test_the_next_batch_is_fetched_while_the_last_applies_yet_batches_apply_in_order(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    ids = await published(js, namespace, 12)
    recorder = Recorder()
    consumer, sub = await consumer_and_sub(js, namespace, pool, recorder)
    feed = Prefetching(consumer)
    try:
        for _ in range(4):
            batch = await sub.fetch(3, timeout=2)
            await feed.submit(batch)
            recorder.log.append(f"submitted {batch[0].headers['ce-id']}")
        await feed.close()
    finally:
        await sub.unsubscribe()

    rows = await pool.fetch("SELECT event_id FROM seen ORDER BY n")
    assert [r["event_id"] for r in rows] == ids  # every event, in stream order
    assert recorder.most_at_once == 1  # one transaction at a time
    # The second batch was fetched and handed over before the first had finished applying.
    assert recorder.log.index(f"submitted {ids[3]}") < recorder.log.index(f"applied {ids[0]}")
    assert consumer.stats.processed == 12

    async def all_acked() -> bool:
        # Acks are fire-and-forget publishes: the server counts them a moment later.
        info = await js.consumer_info(APPLICATIONS.stream_name(namespace), DECL.durable)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_for(all_acked)


async def test_batches_submitted_after_close_are_given_back_not_applied(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    ids = await published(js, namespace, 4)
    recorder = Recorder()
    consumer, sub = await consumer_and_sub(js, namespace, pool, recorder)
    feed = Prefetching(consumer)
    try:
        await feed.submit(await sub.fetch(2, timeout=2))
        await feed.close()  # the first batch is applied and acked
        await feed.submit(await sub.fetch(2, timeout=2))  # NAKed: comes back at once
        again = await sub.fetch(2, timeout=2)
    finally:
        await sub.unsubscribe()

    assert [r["event_id"] for r in await pool.fetch("SELECT event_id FROM seen ORDER BY n")] == (
        ids[:2]
    )
    assert [m.headers["ce-id"] for m in again] == ids[2:]
    assert all(m.metadata.num_delivered == 2 for m in again)
