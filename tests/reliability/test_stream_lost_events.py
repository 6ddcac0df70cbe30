"""Events JetStream acknowledged and then lost: payments' outbox reconciliation finds them and
publishes them again, and reporting ends with exactly the ledger's totals.

Payments runs alone first (as a process) and posts every terminal capture; its relay marks
each PaymentCaptured published with its stream sequence. Then one message in seven is deleted
from the payments stream, as a mistaken purge or a server that lost part of its store would.
Reporting starts only afterwards, so without the reconciliation job it could never count the
deleted ones. ``RELIABILITY_EVENTS`` sets the length.
"""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import httpx
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.facilities import FACILITIES
from contracts.subjects import PAYMENTS, absolute
from services.payments.handlers.registry import register_terminal
from services.runtime import db as rdb
from tests.e2e.helpers import Processes, Spawned, clean_env, is_ready, wait_until
from tests.reliability.helpers import capture

EVENTS = int(os.environ.get("RELIABILITY_EVENTS", "3000"))
AMOUNT_YEN = 500


async def test_events_lost_from_the_stream_are_published_again_and_counted_once(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
) -> None:
    async def start(name: str, http: httpx.AsyncClient) -> Spawned:
        port = free_port()
        env = clean_env(
            NATS_URL=nats_url,
            DATABASE_URL=database_url,
            CITYHALL_NAMESPACE=namespace,
            HTTP_PORT=str(port),
            LOG_LEVEL="WARNING",
            OUTBOX_RECONCILE_INTERVAL_S="1",
            OUTBOX_RECONCILE_GRACE_S="0.5",
        )
        proc = processes.cityhall(name, "serve", name, env=env)

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, f"http://127.0.0.1:{port}")

        await wait_until(ready, timeout=30, interval=0.1, message=proc.output)
        return proc

    payments = f'"{namespace}_payments"'
    reporting = f'"{namespace}_reporting"'

    async def captures_published() -> bool:
        published = await db.fetchval(
            f"SELECT count(*) FROM {payments}.outbox "
            "WHERE subject LIKE 'payments.payment.captured%' AND published_at IS NOT NULL"
        )
        pending = await db.fetchval(
            f"SELECT count(*) FROM {payments}.outbox WHERE published_at IS NULL"
        )
        return bool(published == EVENTS and pending == 0)

    async with httpx.AsyncClient(timeout=5.0) as http:
        pay = await start("payments", http)
        pool = await rdb.create_pool(database_url, f"{namespace}_payments", max_size=2)
        try:
            terminals = [await register_terminal(pool, f.code) for f in FACILITIES[:3]]
        finally:
            await pool.close()
        for i in range(0, EVENTS, 500):
            await asyncio.gather(
                *(
                    js.publish(absolute(namespace, s), b, headers=h)
                    for s, b, h in (
                        capture(
                            terminals[n % 3].terminal_id,
                            terminals[n % 3].facility_code,
                            n,
                            AMOUNT_YEN,
                        )
                        for n in range(i, min(i + 500, EVENTS))
                    )
                )
            )
        await wait_until(captures_published, timeout=120, interval=0.1, message=pay.output)

        # -- the stream loses one acknowledged PaymentCaptured in seven ---------------------
        stream = PAYMENTS.stream_name(namespace)
        seqs = [
            r["stream_seq"]
            for r in await db.fetch(
                f"SELECT stream_seq FROM {payments}.outbox "
                "WHERE subject LIKE 'payments.payment.captured%' ORDER BY seq"
            )
        ]
        deleted = seqs[::7]
        # (The reconciler runs every second meanwhile and may re-publish some already.)
        for seq in deleted:
            assert await js.delete_msg(stream, seq)

        # -- the reconciler re-publishes them; reporting, started now, counts every one ------
        rep = await start("reporting", http)

        async def counted() -> tuple[int, int]:
            row = await db.fetchrow(
                "SELECT coalesce(sum(count), 0)::bigint AS n, "
                f"coalesce(sum(amount_yen), 0)::bigint AS yen FROM {reporting}.payments_daily"
            )
            return int(row["n"]), int(row["yen"])

        async def all_counted() -> bool:
            return (await counted())[0] >= EVENTS

        await wait_until(all_counted, timeout=120, interval=0.2, message=rep.output)
        await asyncio.sleep(1.5)  # another reconciler pass: a double count would show now
        count, amount = await counted()
        again = await db.fetchval(
            f"SELECT count(*) FROM {payments}.outbox WHERE republished > 0 "
            "AND subject LIKE 'payments.payment.captured%'"
        )
        posted = await db.fetchval(f"SELECT count(*) FROM {payments}.payments")
        assert again == len(deleted), f"{again} re-published for {len(deleted)} lost"
        assert posted == EVENTS
        assert (count, amount) == (EVENTS, EVENTS * AMOUNT_YEN), "reporting lost or doubled"
        print(
            f"{EVENTS} captures, {len(deleted)} of their PaymentCaptured deleted from the stream: "
            f"{again} re-published, reporting counted {count} ({amount:,} yen): "
            f"lost {EVENTS - count}, double-counted {max(0, count - EVENTS)}"
        )
        for proc in (pay, rep):
            proc.signal(signal.SIGTERM)
        for proc in (pay, rep):
            assert await proc.wait(30) == 0, proc.output()
