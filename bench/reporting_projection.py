"""Benchmark: reporting's projections, rebuild and KPI queries on real NATS and PostgreSQL.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test NATS_URL=nats://127.0.0.1:4222 \
        .venv/bin/python bench/reporting_projection.py [--applications 10000] [--payments 10000]

1. Publishes the events on a fresh namespace (ApplicationSubmitted over 12 months and 50
   procedures; PaymentCaptured at the 34 facilities with every method, 2% of them refunded,
   one in ten refunds before its capture), then starts the reporting service in-process.
2. Live projection: time from the service's start until ``/projection/lag`` shows nothing
   behind (the backlog applied and acked by its durable consumers), then checks that the
   figures are complete; prints events per second.
3. Rebuild: ``rebuild()`` (what `cityhall reporting rebuild` runs) on the same data; events per
   second, and a check that the figures are the same before and after.
4. Queries: p50/p95/max of each KPI endpoint through the ASGI app (no network).
Everything it creates (schema, streams) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cityhall.provision import provision_all  # noqa: E402
from contracts.applications import ApplicationSubmittedV1, Channel  # noqa: E402
from contracts.envelope import Envelope  # noqa: E402
from contracts.facilities import FACILITIES  # noqa: E402
from contracts.payments import (  # noqa: E402
    PaymentCapturedV1,
    PaymentChannel,
    PaymentMethod,
    PaymentRefundedV1,
)
from contracts.subjects import absolute  # noqa: E402
from services.registry import definition  # noqa: E402
from services.reporting.rebuild import rebuild  # noqa: E402
from services.runtime.server import build_app  # noqa: E402
from services.runtime.settings import ServiceSettings  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from harness import load_average  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
OPERATOR_TOKEN = "bench-reporting-operator-token"
# /metrics and /projection/lag are operators'; the benchmark polls them without a rate limit.
os.environ.update(
    {"REPORTING_STAFF_TOKENS": f"bench={OPERATOR_TOKEN}", "REPORTING_RATE_LIMITS": "false"}
)
ENDPOINTS = (
    "/kpi/online-usage",
    "/kpi/cashless-share",
    "/kpi/revenue",
    "/kpi/certificate-turnaround",
    "/kpi/online-coverage",
    "/open-data/kpi",
    "/metrics",
)


def events(applications: int, payments: int, seed: int = 1) -> list[Envelope[Any]]:
    rng = random.Random(seed)
    start = datetime(2025, 12, 1, tzinfo=UTC)
    out: list[Envelope[Any]] = []
    for _ in range(applications):
        out.append(
            Envelope.new(
                ApplicationSubmittedV1(
                    application_id=uuid.uuid4(),
                    procedure_code=f"BENCH-{rng.randrange(50):03d}",
                    channel=rng.choice(list(Channel)),
                    submitted_at=start + timedelta(minutes=rng.randrange(365 * 24 * 60)),
                ),
                source="/bench",
            )
        )
    methods = list(PaymentMethod)
    for n in range(payments):
        pid = uuid.uuid4()
        facility = rng.choice(FACILITIES).code
        method = rng.choice(methods)
        amount = rng.choice((200, 300, 450, 750, 1500))
        at = start + timedelta(minutes=rng.randrange(365 * 24 * 60))
        capture = Envelope.new(
            PaymentCapturedV1(
                payment_id=pid,
                facility_code=facility,
                channel=PaymentChannel.TERMINAL,
                method=method,
                brand=None if method is PaymentMethod.CASH else "Brand",
                amount_yen=amount,
                item="bench",
                occurred_at=at,
                receipt_number=f"bench-{n}",
            ),
            source="/bench",
        )
        if rng.random() < 0.02:
            refund = Envelope.new(
                PaymentRefundedV1(
                    refund_id=uuid.uuid4(),
                    payment_id=pid,
                    facility_code=facility,
                    channel=PaymentChannel.TERMINAL,
                    method=method,
                    brand=None if method is PaymentMethod.CASH else "Brand",
                    amount_yen=amount,
                    refunded_total_yen=amount,
                    occurred_at=at + timedelta(minutes=5),
                ),
                source="/bench",
            )
            out += [refund, capture] if rng.random() < 0.1 else [capture, refund]
        else:
            out.append(capture)
    return out


async def publish_all(js: Any, namespace: str, envs: list[Envelope[Any]]) -> None:
    for i in range(0, len(envs), 500):
        await asyncio.gather(
            *(
                js.publish(absolute(namespace, e.data.subject), e.body(), headers=e.headers())
                for e in envs[i : i + 500]
            )
        )


async def figures(http: httpx.AsyncClient) -> dict[str, str]:
    """What a rebuild must not change (open data and metrics carry the time of the request)."""
    return {p: (await http.get(p)).text for p in ENDPOINTS if p.startswith("/kpi/")}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--applications", type=int, default=10_000)
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--batch-size", type=int, default=256, help="CONSUMER_BATCH_SIZE of the service"
    )
    args = parser.parse_args()

    namespace = f"bench{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        service="reporting",
        nats_url=NATS_URL,
        database_url=DATABASE_URL,
        namespace=namespace,
        consumer_batch_size=args.batch_size,
    )
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    await provision_all(NATS_URL, namespace, None)  # the operator's step
    envs = events(args.applications, args.payments)
    print(f"reporting projection benchmark: {len(envs)} events, namespace {namespace}")
    print(f"  load average before: {load_average()}")
    # Publish the whole backlog first, so what is timed below is the projection alone (the
    # consumer draining its streams), not this script's publishing.
    started = time.perf_counter()
    await publish_all(js, namespace, envs)
    published = time.perf_counter() - started
    print(f"  published in {published:.1f} s ({len(envs) / published:,.0f} events/s)")
    app = build_app(definition("reporting"), settings)
    runtime = app.state.runtime
    started = time.perf_counter()
    app.state.ctx = await runtime.start()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://reporting",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    )
    try:
        # every event applied and acked (the inbox no longer counts them all: the payment
        # projection is keyed and writes no inbox rows)
        while sum(lag["events_behind"] for lag in (await http.get("/projection/lag")).json()):
            await asyncio.sleep(0.2)
        live = time.perf_counter() - started
        usage = (await http.get("/kpi/online-usage")).json()["total"]["total"]
        assert usage == args.applications, usage
        print(
            f"  live projection: the backlog applied {live:.1f} s after the service started "
            f"({len(envs) / live:,.0f} events/s); load average {load_average()}"
        )

        before = await figures(http)
        started = time.perf_counter()
        report = await rebuild(settings)
        took = time.perf_counter() - started
        applied = sum(report.applied.values())
        after = await figures(http)
        same = after == before
        if not same:
            print(f"  DIFFERENT after rebuild: {[p for p in before if before[p] != after[p]]}")
        print(
            f"  rebuild: {applied} events in {took:.1f} s ({applied / took:,.0f} events/s); "
            f"figures identical after the swap: {same}"
        )

        print(f"  queries ({args.queries} each, through the ASGI app):")
        for path in ENDPOINTS:
            times = []
            for _ in range(args.queries):
                t = time.perf_counter()
                resp = await http.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert resp.status_code == 200, resp.text
            times.sort()
            p95 = times[int(0.95 * (len(times) - 1))]
            print(
                f"    {path:32} p50 {statistics.median(times):6.1f} ms  "
                f"p95 {p95:6.1f} ms  max {times[-1]:6.1f} ms"
            )
    finally:
        await http.aclose()
        await runtime.stop()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(namespace.upper() + "_"):
                await js.delete_stream(info.config.name)
        await nc.close()
        conn = await asyncpg.connect(DATABASE_URL)
        for row in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{namespace}\\_%"
        ):
            await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
