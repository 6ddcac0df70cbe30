"""Payments and reporting SIGKILLed in the middle of their batches, then restarted: every
capture is posted once and counted once.

The services run as processes (``cityhall serve``) on the session's NATS and PostgreSQL. The
terminals' captures are all acknowledged by JetStream (the ground truth); both consumers are
killed while they work through them, with batches fetched and not yet acked, maybe committed
and not yet acked. On restart JetStream redelivers what was not acked, and the inbox and the
payments key drop what was already committed. ``RELIABILITY_EVENTS`` sets the length.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import asyncpg
import httpx
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.facilities import FACILITIES
from contracts.subjects import absolute
from services.payments.handlers.registry import register_terminal
from services.runtime import db as rdb
from tests.e2e.helpers import Processes, Spawned, clean_env, is_ready, wait_until
from tests.integration.payments.helpers import assert_ledger_balances
from tests.reliability.helpers import capture

EVENTS = int(os.environ.get("RELIABILITY_EVENTS", "3000"))
AMOUNT_YEN = 200


async def test_consumers_killed_mid_batch_post_and_count_every_capture_once(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
) -> None:
    ports = {"payments": free_port(), "reporting": free_port()}

    async def start(name: str, http: httpx.AsyncClient) -> Spawned:
        env = clean_env(
            NATS_URL=nats_url,
            DATABASE_URL=database_url,
            CITYHALL_NAMESPACE=namespace,
            HTTP_PORT=str(ports[name]),
            LOG_LEVEL="WARNING",
        )
        proc = processes.cityhall(name, "serve", name, env=env)
        url = f"http://127.0.0.1:{ports[name]}"

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, url)

        await wait_until(ready, timeout=30, interval=0.1, message=proc.output)
        return proc

    async def counted() -> int:
        return int(
            await db.fetchval(
                f'SELECT coalesce(sum(count), 0) FROM "{namespace}_reporting".payments_daily'
            )
        )

    async with httpx.AsyncClient(timeout=5.0) as http:
        running = {name: await start(name, http) for name in ("payments", "reporting")}
        pool = await rdb.create_pool(database_url, f"{namespace}_payments", max_size=2)
        try:
            terminals = [await register_terminal(pool, f.code) for f in FACILITIES[:4]]
        finally:
            await pool.close()
        for i in range(0, EVENTS, 500):
            await asyncio.gather(
                *(
                    js.publish(absolute(namespace, s), b, headers=h)
                    for s, b, h in (
                        capture(
                            terminals[n % 4].terminal_id,
                            terminals[n % 4].facility_code,
                            n,
                            AMOUNT_YEN,
                        )
                        for n in range(i, min(i + 500, EVENTS))
                    )
                )
            )

        # -- both killed while they work through the stream ---------------------------------
        await wait_until(
            lambda: _at_least(counted, EVENTS // 10),
            timeout=60,
            interval=0.01,
        )
        at_kill = await counted()
        for proc in running.values():
            proc.signal(signal.SIGKILL)
        for proc in running.values():
            assert await proc.wait(10) == -signal.SIGKILL
        assert at_kill < EVENTS, "killed too late: everything was already counted"

        # -- restarted: the rest arrives, nothing twice ---------------------------------------
        running = {name: await start(name, http) for name in ("payments", "reporting")}
        deadline = time.monotonic() + 120
        while await counted() < EVENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a double count would show by now

        payments = f'"{namespace}_payments"'
        posted = await db.fetchval(f"SELECT count(*) FROM {payments}.payments")
        count, amount = await db.fetchrow(
            f"SELECT sum(count)::bigint, sum(amount_yen)::bigint "
            f'FROM "{namespace}_reporting".payments_daily'
        )
        assert posted == EVENTS, f"ledger: {posted} payments for {EVENTS} captures"
        assert (count, amount) == (EVENTS, EVENTS * AMOUNT_YEN), "reporting lost or doubled"
        pool = await rdb.create_pool(database_url, f"{namespace}_payments", max_size=1)
        try:
            await assert_ledger_balances(pool)
        finally:
            await pool.close()
        print(
            f"payments and reporting SIGKILLed at {at_kill} of {EVENTS} counted: "
            f"posted {posted}, counted {count}: lost {EVENTS - min(posted, count)}, "
            f"double-counted {max(posted, count) - EVENTS}"
        )
        for proc in running.values():
            proc.signal(signal.SIGTERM)
        for proc in running.values():
            assert await proc.wait(30) == 0, proc.output()


async def _at_least(value: Any, target: int) -> bool:
    return bool(await value() >= target)
