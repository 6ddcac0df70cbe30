"""PostgreSQL stopped under load, then started again: nothing a client was told is done is
missing, no event without its state change, no state change without its event, and every
terminal capture is posted and counted once.

The test runs its own PostgreSQL (it stops it with ``pg_ctl -m immediate``: to the services a
crash; recovery replays the WAL) and the session's NATS. applications, payments and reporting
run as processes. While the database is down:

* counter staff keep posting applications (each with its own ``Idempotency-Key``). An answer
  of 201 means "done"; any other answer, or none, means "not done": the client tries the same
  key again after the outage, as a counter terminal would;
* terminals keep publishing captures to JetStream (which is up): the ground truth.

``RELIABILITY_PG_OUTAGES`` lists the outages in seconds (CI: ``10``; ``make soak``:
``10,60``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext

from cityhall.embedded import EmbeddedPostgres, free_port
from contracts.facilities import FACILITIES
from contracts.subjects import APPLICATIONS, absolute
from services.payments.handlers.registry import register_terminal
from services.runtime import db as rdb
from tests.e2e.helpers import Processes, Spawned, clean_env, is_ready, wait_until
from tests.reliability.helpers import capture

OUTAGES = [float(s) for s in os.environ.get("RELIABILITY_PG_OUTAGES", "10").split(",")]
STAFF_TOKEN = "reliability-counter-token"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
AMOUNT_YEN = 400
CAPTURES_PER_S = 100
POSTERS = 4

pytestmark = pytest.mark.timeout(300 + 2 * sum(OUTAGES))


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg" / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Load:
    """What the clients were told."""

    done: dict[str, str] = field(default_factory=dict)
    """Idempotency-Key -> application id, for every 201."""
    not_done: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0
    captures: int = 0


@pytest.mark.parametrize("outage_s", OUTAGES, ids=lambda s: f"{s:g}s")
async def test_postgres_stopped_under_load_loses_nothing_and_doubles_nothing(
    outage_s: float,
    nats_url: str,
    namespace: str,
    js: JetStreamContext,
    own_pg: EmbeddedPostgres,
    processes: Processes,
) -> None:
    database_url = own_pg.url()
    ports = {name: free_port() for name in ("applications", "payments", "reporting")}

    async def start(name: str, http: httpx.AsyncClient) -> Spawned:
        env = clean_env(
            NATS_URL=nats_url,
            DATABASE_URL=database_url,
            CITYHALL_NAMESPACE=namespace,
            HTTP_PORT=str(ports[name]),
            LOG_LEVEL="WARNING",
            APPLICATIONS_STAFF_TOKENS=f"counter01={STAFF_TOKEN}",
            # The load is one caller sending as fast as it can: its per-caller rate limit
            # would answer 429s that say nothing of the outage (limits: tests/security).
            APPLICATIONS_RATE_LIMITS="false",
        )
        proc = processes.cityhall(name, "serve", name, env=env)

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, f"http://127.0.0.1:{ports[name]}")

        await wait_until(ready, timeout=30, interval=0.1, message=proc.output)
        return proc

    load = Load()
    stop_load = asyncio.Event()

    async def post(http: httpx.AsyncClient, key: str, n: int) -> bool:
        body = {
            "procedure_code": "SHIMIN_NO_KOE",
            "channel": "counter",
            "form": {"subject": "道路の街灯", "body": f"街灯が消えています（{n}）"},
        }
        started = time.monotonic()
        try:
            resp = await http.post(
                f"http://127.0.0.1:{ports['applications']}/applications",
                json=body,
                headers=STAFF | {"Idempotency-Key": key},
                timeout=30.0,
            )
        except httpx.HTTPError as exc:
            load.answers[type(exc).__name__] += 1
            return False
        finally:
            load.slowest_s = max(load.slowest_s, time.monotonic() - started)
        load.answers[str(resp.status_code)] += 1
        if resp.status_code == 201:
            load.done[key] = resp.json()["id"]
            return True
        return False

    async def poster(http: httpx.AsyncClient, lane: int) -> None:
        n = 0
        while not stop_load.is_set():
            key = f"rel-{lane}-{n}-{uuid.uuid4().hex[:8]}"
            if not await post(http, key, n):
                load.not_done.add(key)
                await asyncio.sleep(0.2)
            n += 1

    async def terminals_publish(terminals: list) -> None:  # type: ignore[type-arg]
        n = 0
        while not stop_load.is_set():
            t = terminals[n % len(terminals)]
            subject, body, headers = capture(t.terminal_id, t.facility_code, n, AMOUNT_YEN)
            await js.publish(absolute(namespace, subject), body, headers=headers)
            load.captures = n = n + 1
            await asyncio.sleep(1 / CAPTURES_PER_S)

    async with httpx.AsyncClient() as http:
        running = {name: await start(name, http) for name in ports}
        pool = await rdb.create_pool(database_url, f"{namespace}_payments", max_size=1)
        try:
            terminals = [await register_terminal(pool, f.code) for f in FACILITIES[:3]]
        finally:
            await pool.close()

        workers = [asyncio.create_task(poster(http, lane)) for lane in range(POSTERS)]
        workers.append(asyncio.create_task(terminals_publish(terminals)))
        await asyncio.sleep(3)
        done_before = len(load.done)
        own_pg.halt("immediate")
        halted_at = time.monotonic()
        await asyncio.sleep(outage_s)
        own_pg.resume()
        down_s = time.monotonic() - halted_at
        answers_during = dict(load.answers)
        await asyncio.sleep(5)
        stop_load.set()
        await asyncio.gather(*workers)
        assert all(p.returncode is None for p in running.values()), "a service died"

        # -- clients try again what they were not told was done ------------------------------
        for key in sorted(load.not_done):
            await wait_until(lambda key=key: post(http, key, 0), timeout=30, interval=0.5)

        conn = await asyncpg.connect(database_url)
        try:
            apps = f'"{namespace}_applications"'
            payments = f'"{namespace}_payments"'
            reporting = f'"{namespace}_reporting"'

            async def settled() -> bool:
                pending = 0
                for schema in (apps, payments):
                    pending += await conn.fetchval(
                        f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
                    )
                counted = await conn.fetchval(
                    f"SELECT coalesce(sum(count), 0) FROM {reporting}.payments_daily"
                )
                return pending == 0 and counted >= load.captures

            await wait_until(settled, timeout=120, interval=0.2)
            await asyncio.sleep(1.0)  # a double count would show by now

            rows = {str(r["id"]) for r in await conn.fetch(f"SELECT id FROM {apps}.applications")}
            posted = await conn.fetchval(f"SELECT count(*) FROM {payments}.payments")
            count, amount = await conn.fetchrow(
                "SELECT sum(count)::bigint, sum(amount_yen)::bigint "
                f"FROM {reporting}.payments_daily"
            )
        finally:
            await conn.close()

        submitted = await submitted_ids(js, namespace)

    told_done = set(load.done.values())
    # Nobody was told "done" for work that is not there; every retried key made one row.
    missing = told_done - rows
    assert not missing, f"{len(missing)} applications answered 201 are not in the database"
    assert len(rows) == len(load.done) == len(told_done), "an application was made twice"
    # No event without its state change, no state change without its event.
    assert Counter(submitted) == Counter(rows), "events and rows differ"
    # Terminals: every acknowledged capture posted once and counted once.
    assert posted == load.captures, f"ledger {posted} for {load.captures} captures"
    assert (count, amount) == (load.captures, load.captures * AMOUNT_YEN)
    failed_during = sum(v for k, v in answers_during.items() if k != "201")
    assert failed_during > 0, "the outage was not felt: the test proves nothing"
    # Clients were told clearly: 503 (with Retry-After), not a 500 or a dropped connection.
    assert set(load.answers) <= {"201", "503"}, load.answers
    report = (
        f"PostgreSQL down {down_s:.1f} s under load: {len(rows)} applications "
        f"({done_before} before the stop; {len(load.not_done)} not done during the outage, "
        f"retried with their key), answers {dict(load.answers)}, slowest {load.slowest_s:.1f} s; "
        f"{load.captures} captures: posted {posted}, counted {count} ({amount:,} yen): "
        f"lost {load.captures - min(posted, count)}, double-counted "
        f"{max(posted, count) - load.captures}; events = rows"
    )
    print(report)
    for proc in running.values():
        proc.signal(signal.SIGTERM)
    for proc in running.values():
        with contextlib.suppress(Exception):
            await proc.wait(30)


async def submitted_ids(js: JetStreamContext, namespace: str) -> list[str]:
    """The application id of every ApplicationSubmitted the stream holds."""
    stream = APPLICATIONS.stream_name(namespace)
    sub = await js.pull_subscribe(
        absolute(namespace, "applications.application.submitted.>"), stream=stream
    )
    ids: list[str] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except TimeoutError:
                break
            for msg in msgs:
                ids.append(json.loads(msg.data)["application_id"])
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return ids
