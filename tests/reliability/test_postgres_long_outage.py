"""A PostgreSQL outage longer than any delivery bound dead-letters nothing; poison still goes.

Time is compressed: the services run with a back-off of 0.2 s then 0.5 s, a poison bound of
3 handler failures (``CONSUMER_MAX_DELIVER``) and a delivery limit of 5
(``CONSUMER_DELIVERY_LIMIT``). Before issue 21 a consumer NAKed every message of its backlog
with that back-off through an outage, JetStream redelivered each after its delay, and at the
6th delivery (0.2 + 4 x 0.5 = 2.2 s in; 47 minutes with the production values 50 and 60 s)
the message was dead-lettered: every event in flight ended in the DLQ. Now a consumer whose
batch fails because the database is unavailable pauses its pull loop until a probe answers
(``services/runtime/outage.py``), and poison is counted by handler failures, not deliveries.

The outage is ``RELIABILITY_PG_LONG_OUTAGE_S`` (default 10 s: 4.5 times the old
horizon). The test runs its own PostgreSQL (it stops it with ``pg_ctl -m immediate``) and the
session's NATS; payments and reporting run as processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext

from cityhall.embedded import EmbeddedPostgres, free_port
from contracts import ApplicationSubmittedV1
from contracts.envelope import Envelope
from contracts.facilities import FACILITIES
from contracts.subjects import APPLICATIONS, absolute
from services.payments.handlers.registry import register_terminal
from services.runtime import db as rdb
from services.runtime.consumer import EventConsumer
from services.runtime.dlq import DeadLetters, list_dead_letters
from services.runtime.outage import Availability
from services.runtime.prefetch import Prefetching
from services.runtime.pull import PullLoop
from services.runtime.streams import ConsumerDecl, provision_consumer
from tests.e2e.helpers import Processes, Spawned, clean_env, is_ready, wait_until
from tests.integration.helpers import provision, publish_envelope, submitted
from tests.reliability.helpers import capture

OUTAGE_S = float(os.environ.get("RELIABILITY_PG_LONG_OUTAGE_S", "10"))
BACKOFF = "0.2,0.5"
MAX_DELIVER = 3  # handler failures
DELIVERY_LIMIT = 5  # deliveries in all
OLD_HORIZON_S = 0.2 + 0.5 * (DELIVERY_LIMIT - 1)  # when the 6th delivery came, before
AMOUNT_YEN = 300
CAPTURES_PER_S = 100

pytestmark = pytest.mark.timeout(120 + 2 * OUTAGE_S)


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg" / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def compressed_env(**values: str) -> dict[str, str]:
    return clean_env(
        CONSUMER_BACKOFF_S=BACKOFF,
        CONSUMER_MAX_DELIVER=str(MAX_DELIVER),
        CONSUMER_DELIVERY_LIMIT=str(DELIVERY_LIMIT),
        CONSUMER_OUTAGE_PROBE_S="0.5",
        LOG_LEVEL="WARNING",
        **values,
    )


async def test_an_outage_longer_than_the_delivery_bound_dead_letters_nothing(
    nats_url: str,
    namespace: str,
    js: JetStreamContext,
    own_pg: EmbeddedPostgres,
    processes: Processes,
) -> None:
    assert OUTAGE_S > 3 * OLD_HORIZON_S
    database_url = own_pg.url()
    ports = {name: free_port() for name in ("payments", "reporting")}

    async def start(name: str, http: httpx.AsyncClient) -> Spawned:
        env = compressed_env(
            NATS_URL=nats_url,
            DATABASE_URL=database_url,
            CITYHALL_NAMESPACE=namespace,
            HTTP_PORT=str(ports[name]),
        )
        proc = processes.cityhall(name, "serve", name, env=env)

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, f"http://127.0.0.1:{ports[name]}")

        await wait_until(ready, timeout=30, interval=0.1, message=proc.output)
        return proc

    published = 0
    stop_load = asyncio.Event()

    async def terminals_publish(terminals: Sequence[Any]) -> None:
        nonlocal published
        while not stop_load.is_set():
            t = terminals[published % len(terminals)]
            subject, body, headers = capture(t.terminal_id, t.facility_code, published, AMOUNT_YEN)
            await js.publish(absolute(namespace, subject), body, headers=headers)
            published += 1
            await asyncio.sleep(1 / CAPTURES_PER_S)

    async with httpx.AsyncClient() as http:
        running = {name: await start(name, http) for name in ports}
        pool = await rdb.create_pool(database_url, f"{namespace}_payments", max_size=1)
        try:
            terminals = [await register_terminal(pool, f.code) for f in FACILITIES[:3]]
        finally:
            await pool.close()
        load = asyncio.create_task(terminals_publish(terminals))
        await asyncio.sleep(2)
        own_pg.halt("immediate")
        halted_at = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        own_pg.resume()
        down_s = time.monotonic() - halted_at
        await asyncio.sleep(2)
        stop_load.set()
        await load
        assert all(p.returncode is None for p in running.values()), "a service died"

        conn = await asyncpg.connect(database_url)
        try:
            payments, reporting = f'"{namespace}_payments"', f'"{namespace}_reporting"'

            async def settled() -> bool:
                counted = await conn.fetchval(
                    f"SELECT coalesce(sum(count), 0) FROM {reporting}.payments_daily"
                )
                return bool(counted >= published)

            await wait_until(settled, timeout=60, interval=0.2)
            await asyncio.sleep(1.0)  # a double count would show by now
            posted = await conn.fetchval(f"SELECT count(*) FROM {payments}.payments")
            counted = await conn.fetchval(f"SELECT sum(count) FROM {reporting}.payments_daily")
            failures = await conn.fetchval(
                f"SELECT count(*) FROM {payments}.consumer_failures"
            ) + await conn.fetchval(f"SELECT count(*) FROM {reporting}.consumer_failures")
        finally:
            await conn.close()
    letters = await list_dead_letters(js, namespace)
    print(
        f"PostgreSQL down {down_s:.1f} s (old dead-letter horizon {OLD_HORIZON_S:.1f} s: "
        f"back-off {BACKOFF} s, delivery limit {DELIVERY_LIMIT}, poison bound {MAX_DELIVER}): "
        f"{published} captures, posted {posted}, counted {counted}, dead letters "
        f"{len(letters)}, handler failures counted {failures}"
    )
    assert letters == [], [letter.reason for letter in letters]
    assert posted == counted == published
    assert failures == 0  # an unavailable database is not a handler failure
    for proc in running.values():
        proc.signal(signal.SIGTERM)
    for proc in running.values():
        with contextlib.suppress(Exception):
            await proc.wait(30)


async def test_poison_is_dead_lettered_by_its_handler_failures_after_an_outage(
    js: JetStreamContext, namespace: str, own_pg: EmbeddedPostgres
) -> None:
    """The consumer alone, on the embedded PostgreSQL: a batch with one poison event meets
    an outage first (its deliveries grow, its failures do not), then the poison is
    dead-lettered at its 3rd handler failure, with the reason; the good events are applied."""
    await provision(js, namespace)
    schema = f"{namespace}_outage"
    pool = await rdb.create_pool(own_pg.url(), schema, max_size=2)
    await rdb.migrate(pool, schema, rdb.load_migrations("runtime", "services.runtime"))
    await pool.execute("CREATE TABLE seen (event_id text PRIMARY KEY)")
    poison, good = submitted(), [submitted() for _ in range(20)]

    async def handler(conn: asyncpg.Connection, env: Envelope[Any]) -> None:
        await conn.execute("INSERT INTO seen VALUES ($1)", env.id)
        if env.id == poison.id:
            raise ValueError("procedure JUMINHYO is not in the catalog")

    for env in [*good[:10], poison, *good[10:]]:
        await publish_envelope(js, namespace, env)
    decl = ConsumerDecl(
        durable="outage_probe",
        stream=APPLICATIONS,
        subjects=(ApplicationSubmittedV1.subject,),
        max_deliver=MAX_DELIVER,
        delivery_limit=DELIVERY_LIMIT,
    )
    await provision_consumer(js, decl, namespace)
    availability = Availability(lambda: pool.fetchval("SELECT 1"), 0.3)
    consumer = EventConsumer(
        decl=decl,
        handlers={ApplicationSubmittedV1: handler},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
        backoff_s=(0.2, 0.5),
        availability=availability,
    )
    feed = Prefetching(consumer)
    pull = PullLoop(
        js,
        durable=decl.durable,
        stream=APPLICATIONS.stream_name(namespace),
        inbox_prefix="_INBOX",
        batch_size=50,
        max_wait_s=0.05,
        submit=feed.submit,
        availability=availability,
    )
    outage_s = min(OUTAGE_S, 6.0)  # 2.7 times the old horizon: enough for one consumer
    own_pg.halt("immediate")
    await pull.start()
    try:
        await asyncio.sleep(outage_s)
        own_pg.resume()

        async def settled() -> bool:
            applied = await pool.fetchval("SELECT count(*) FROM seen")
            return consumer.stats.dead_lettered == 1 and applied == 20

        await wait_until(settled, timeout=30, interval=0.1)
    finally:
        await pull.stop()
        await feed.close()
        await availability.close()
    seen = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM seen")}
    await pool.close()
    [letter] = await list_dead_letters(js, namespace, consumer="outage_probe")
    print(
        f"outage {outage_s:.0f} s, then poison dead-lettered after delivery {letter.deliveries}: "
        f"{letter.reason}; {len(seen)} good applied, {availability.outages} outage(s) seen"
    )
    assert letter.headers["ce-id"] == poison.id
    assert f"handler failed {MAX_DELIVER} times" in letter.reason
    assert "ValueError: procedure JUMINHYO is not in the catalog" in letter.reason
    # The outage cost it one delivery (the batch in hand): its 3 failures came on
    # deliveries 2, 3 and 4. Counted by deliveries it would have gone after 2 failures.
    assert letter.deliveries > MAX_DELIVER
    assert seen == {e.id for e in good}
    assert availability.outages >= 1
