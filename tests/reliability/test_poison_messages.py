"""Poison messages in a stream of terminal captures: they reach the DLQ within seconds, the
good captures behind them are not held up, and after the fix ``cityhall dlq show`` and
``cityhall dlq replay`` re-drive them; totals end exact.

Two kinds of poison, as they happen at a facility:

* a terminal installed before anyone registered it in payments: its captures are refused
  (``UnknownTerminal``). The fix is the registration; replayed, they are posted and counted;
* a terminal's garbled message (not JSON): it can never be applied. Replayed, it goes back
  to the DLQ with its reason, and the totals do not move.

payments and reporting run as processes; the CLI is run as an operator would.
``RELIABILITY_EVENTS`` sets the number of good captures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import asyncpg
import httpx
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.facilities import FACILITIES
from contracts.payments import terminal_subject
from contracts.subjects import absolute
from services.payments.handlers.registry import register_terminal
from services.runtime import db as rdb
from tests.e2e.helpers import Processes, Spawned, clean_env, is_ready, wait_until
from tests.integration.payments.helpers import assert_ledger_balances
from tests.reliability.helpers import capture

EVENTS = int(os.environ.get("RELIABILITY_EVENTS", "3000"))
UNREGISTERED = 40
GARBLED = 10
AMOUNT_YEN = 600


async def test_poison_messages_are_dead_lettered_fast_and_replayed_after_the_fix(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
) -> None:
    env = clean_env(
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        CITYHALL_NAMESPACE=namespace,
        LOG_LEVEL="WARNING",
    )

    async def start(name: str, http: httpx.AsyncClient) -> Spawned:
        port = free_port()
        proc = processes.cityhall(name, "serve", name, env=env | {"HTTP_PORT": str(port)})

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, f"http://127.0.0.1:{port}")

        await wait_until(ready, timeout=30, interval=0.1, message=proc.output)
        return proc

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cityhall", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    async def counted() -> tuple[int, int]:
        row = await db.fetchrow(
            "SELECT coalesce(sum(count), 0)::bigint AS n, coalesce(sum(amount_yen), 0)::bigint "
            f'AS yen FROM "{namespace}_reporting".payments_daily'
        )
        return int(row["n"]), int(row["yen"])

    def letters() -> list[dict]:  # type: ignore[type-arg]
        return [
            json.loads(line)
            for line in cli("dlq", "list", "--json", "--limit", "1000").splitlines()
        ]

    async with httpx.AsyncClient(timeout=5.0) as http:
        running = [await start(name, http) for name in ("payments", "reporting")]
        pool = await rdb.create_pool(database_url, f"{namespace}_payments", max_size=2)
        try:
            good = [await register_terminal(pool, f.code) for f in FACILITIES[:2]]
            facility = good[0].facility_code
            stranger = f"{facility}-t02"  # installed, not registered yet

            # -- good captures with poison among them --------------------------------------
            every = EVENTS // UNREGISTERED
            published_at = time.time()
            sends = []
            for n in range(EVENTS):
                t = good[n % 2]
                sends.append(capture(t.terminal_id, t.facility_code, n, AMOUNT_YEN))
                if n % every == 0 and n // every < UNREGISTERED:
                    sends.append(capture(stranger, facility, 1_000_000 + n, AMOUNT_YEN))
                if n % (EVENTS // GARBLED) == 0 and n // (EVENTS // GARBLED) < GARBLED:
                    garbled = b'{"terminal_id": "' + good[0].terminal_id.encode() + b'", \x00\xff'
                    sends.append((terminal_subject(facility, good[0].terminal_id), garbled, {}))
            for i in range(0, len(sends), 500):
                await asyncio.gather(
                    *(
                        js.publish(absolute(namespace, s), b, headers=h)
                        for s, b, h in sends[i : i + 500]
                    )
                )

            # -- the good ones are not held up; the poison is in the DLQ within seconds -----
            async def good_counted() -> bool:
                return (await counted())[0] >= EVENTS

            await wait_until(good_counted, timeout=120, interval=0.1, message=running[0].output)
            drained_s = time.time() - published_at
            await wait_until(
                lambda: _ready(lambda: len(letters()) >= UNREGISTERED + GARBLED),
                timeout=60,
                interval=0.5,
            )
            dead = letters()
            assert len(dead) == UNREGISTERED + GARBLED, [d["reason"] for d in dead]
            reasons = [d["reason"] for d in dead]
            assert sum("UnknownTerminal" in r for r in reasons) == UNREGISTERED, reasons
            assert sum("invalid event" in r for r in reasons) == GARBLED, reasons
            slowest_to_dlq = max(
                datetime.fromisoformat(d["dead_at"]).timestamp() - published_at for d in dead
            )
            assert await counted() == (EVENTS, EVENTS * AMOUNT_YEN)

            # -- an operator looks at one, fixes the cause, replays --------------------------
            refused = next(d for d in dead if "UnknownTerminal" in d["reason"])
            shown = json.loads(cli("dlq", "show", str(refused["dlq_seq"])))
            assert stranger in shown["reason"]
            assert json.loads(shown["body"])["terminal_id"] == stranger
            assert shown["deliveries"] == 1, "a refused capture is dead-lettered at once"

            fixed = await register_terminal(pool, facility)
            assert fixed.terminal_id == stranger
            consumer = refused["consumer"]
            out = cli("dlq", "replay", "--consumer", consumer)
            assert f"replayed {UNREGISTERED + GARBLED} dead letter(s)" in out, out

            total = EVENTS + UNREGISTERED

            async def all_counted() -> bool:
                return (await counted())[0] >= total

            await wait_until(all_counted, timeout=60, interval=0.1)
            await asyncio.sleep(1.0)  # a double count would show by now
            posted = await db.fetchval(f'SELECT count(*) FROM "{namespace}_payments".payments')
            assert posted == total
            assert await counted() == (total, total * AMOUNT_YEN)
            await assert_ledger_balances(pool)
        finally:
            await pool.close()

        # The garbled ones are back in the DLQ (replayed, refused again), nothing else is.
        async def garbled_back() -> bool:
            return len(letters()) == GARBLED

        await wait_until(garbled_back, timeout=30, interval=0.5)
        assert all("invalid event" in d["reason"] for d in letters())
        print(
            f"{EVENTS} good captures with {UNREGISTERED} from an unregistered terminal and "
            f"{GARBLED} garbled: good ones counted in {drained_s:.1f} s, the poison in the DLQ "
            f"{slowest_to_dlq:.1f} s after the first publish at the latest; after registering "
            f"the terminal and `dlq replay`: posted {posted}, counted {total} "
            f"({total * AMOUNT_YEN:,} yen), lost 0, double-counted 0; {GARBLED} garbled "
            "back in the DLQ"
        )
        for proc in running:
            proc.signal(signal.SIGTERM)
        for proc in running:
            assert await proc.wait(30) == 0, proc.output()


async def _ready(check):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(check)
