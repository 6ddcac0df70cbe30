"""Benchmark: terminal ingestion (events/s) against raw JetStream publish, in the same run.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test NATS_URL=nats://127.0.0.1:4222 \
        .venv/bin/python bench/payments_ingest.py [--count 5000] [--terminals 10]

1. **Raw JetStream publish**: ``--count`` terminal transactions (the same bodies and CloudEvents
   headers a terminal sends) published with PubAcks, ``--window`` in flight at a time, to a
   stream of the same configuration as TERMINALS that nobody consumes. This is the ceiling.
2. **Ingestion**: the payments service runs in-process; ``--count`` captures from
   ``--terminals`` registered terminals are published the same way, and the clock stops when
   every one is posted (dedupe key, payment, receipt number, balanced ledger posting, outbox
   row, inbox row: one transaction per consumer batch), then again when the relay has published
   every PaymentCaptured.

Prints both rates and their ratio, and checks the ledger balances. Everything it creates
(schema, streams) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import terminal_message  # noqa: E402

from cityhall.provision import provision_all  # noqa: E402
from contracts.payments import terminal_subject  # noqa: E402
from contracts.subjects import absolute  # noqa: E402
from services.payments.handlers.registry import register_terminal  # noqa: E402
from services.payments.store import postings  # noqa: E402
from services.registry import definition  # noqa: E402
from services.runtime.server import build_app  # noqa: E402
from services.runtime.settings import ServiceSettings  # noqa: E402
from services.runtime.streams import DUPLICATE_WINDOW_S  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


def message(terminal_id: str, facility: str, n: int) -> tuple[bytes, dict[str, str]]:
    """A capture as a terminal publishes it (the same as the pipeline benchmark's)."""
    _subject, body, headers = terminal_message(terminal_id, facility, n, "B")
    return body, headers


async def publish_all(
    js: JetStreamContext, items: list[tuple[str, bytes, dict[str, str]]], window: int
) -> float:
    """Publish with PubAcks, ``window`` at a time; seconds taken."""
    started = time.perf_counter()
    for i in range(0, len(items), window):
        chunk = items[i : i + window]
        await asyncio.gather(*(js.publish(s, b, headers=h, timeout=30) for s, b, h in chunk))
    return time.perf_counter() - started


async def wait_until(check: Any, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not await check():
        if time.perf_counter() > deadline:
            raise SystemExit("timed out waiting for ingestion")
        await asyncio.sleep(0.02)


async def run(count: int, terminals: int, window: int, batch: int) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    raw_stream = f"{namespace.upper()}_RAW"
    settings = ServiceSettings(
        service="payments",
        nats_url=NATS_URL,
        database_url=DATABASE_URL,
        namespace=namespace,
        consumer_batch_size=batch,
        outbox_poll_interval_s=0.05,
    )
    await provision_all(settings.nats_url, settings.namespace, None)  # the operator's step
    app = build_app(definition("payments"), settings)
    runtime = app.state.runtime
    try:
        # -- 1. raw JetStream publish (the ceiling) ------------------------------------------
        await js.add_stream(
            StreamConfig(
                name=raw_stream,
                subjects=[f"{namespace}.raw.>"],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
        )
        raw_items = []
        for n in range(count):
            body, headers = message("raw-t01", "shiminka", n)
            raw_items.append((f"{namespace}.raw.shiminka.raw-t01.tx.v1", body, headers))
        raw_s = await publish_all(js, raw_items, window)

        # -- 2. ingestion by the payments service --------------------------------------------
        ctx = await runtime.start()
        app.state.ctx = ctx
        registered = [await register_terminal(ctx.pool, "shiminka") for _ in range(terminals)]
        items = []
        for n in range(count):
            t = registered[n % terminals]
            body, headers = message(t.terminal_id, t.facility_code, n)
            subject = absolute(namespace, terminal_subject(t.facility_code, t.terminal_id))
            items.append((subject, body, headers))

        async def posted() -> bool:
            done = await ctx.pool.fetchval("SELECT count(*) FROM terminal_transactions")
            return bool(done >= count)

        async def announced() -> bool:
            left = await ctx.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            total = await ctx.pool.fetchval("SELECT count(*) FROM outbox")
            return bool(total >= count and left == 0)

        started = time.perf_counter()
        publish_s = await publish_all(js, items, window)
        await wait_until(posted, timeout=600)
        posted_s = time.perf_counter() - started
        await wait_until(announced, timeout=600)
        announced_s = time.perf_counter() - started

        stats = {c.name: vars(c.stats) for c in ctx.consumers}
        unbalanced = await postings.unbalanced_postings(ctx.pool)
        dead = sum(c.stats.dead_lettered for c in ctx.consumers)
        if unbalanced or dead:
            raise SystemExit(f"ledger unbalanced {unbalanced} or dead letters {dead}")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://payments"
        ) as http:
            assert (await http.get("/readyz")).status_code == 200
        return {
            "count": count,
            "terminals": terminals,
            "window": window,
            "consumer_batch_size": batch,
            "raw_publish_s": round(raw_s, 3),
            "raw_publish_per_s": round(count / raw_s),
            "ingest_publish_s": round(publish_s, 3),
            "ingest_posted_s": round(posted_s, 3),
            "ingest_posted_per_s": round(count / posted_s),
            "ingest_announced_s": round(announced_s, 3),
            "ingest_announced_per_s": round(count / announced_s),
            "posted_vs_raw": round((count / posted_s) / (count / raw_s), 3),
            "consumer_stats": stats,
        }
    finally:
        await runtime.stop()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(namespace.upper() + "_"):
                await js.delete_stream(info.config.name)
        await nc.close()
        conn = await asyncpg.connect(DATABASE_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}_payments" CASCADE')
        finally:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10)
    parser.add_argument("--window", type=int, default=500, help="publishes in flight")
    parser.add_argument("--batch", type=int, default=256, help="CONSUMER_BATCH_SIZE")
    args = parser.parse_args()
    # As in a service (services.runtime.telemetry): FastStream's per-message logs off.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("faststream").setLevel(logging.WARNING)
    result = asyncio.run(run(args.count, args.terminals, args.window, args.batch))
    print(
        f"raw JetStream publish : {result['raw_publish_per_s']:>7} events/s "
        f"({args.count} in {result['raw_publish_s']} s)\n"
        f"terminal ingestion    : {result['ingest_posted_per_s']:>7} events/s posted "
        f"({result['ingest_posted_s']} s), {result['ingest_announced_per_s']} events/s with "
        f"PaymentCaptured published ({result['ingest_announced_s']} s)\n"
        f"ingestion / raw       : {result['posted_vs_raw']:.1%}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
