"""Benchmark: import the whole shipped catalog, then search it (targets: < 10 s, p95 < 50 ms).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test NATS_URL=nats://127.0.0.1:4222 \
        .venv/bin/python bench/applications_catalog.py [--searches 1000]

1. Runs ``cityhall catalog import services/applications/catalog/sample_catalog.json`` as a
   process on a fresh schema (wall time of the command: Python start-up, parsing, every row
   upserted and every ProcedureRegistered written to the outbox).
2. Starts the applications service in-process on the same schema and times ``GET /procedures``
   through its ASGI app (no network) for a mix of searches: free text, department, group,
   online status and deep pages. Prints p50/p95/p99 and the slowest.
Everything it creates (schema, streams) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cityhall.provision import provision_all  # noqa: E402
from services.applications.catalog import SHIPPED, generate  # noqa: E402
from services.registry import definition  # noqa: E402
from services.runtime.server import build_app  # noqa: E402
from services.runtime.settings import ServiceSettings  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


def import_catalog(namespace: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env |= {"DATABASE_URL": DATABASE_URL, "CITYHALL_NAMESPACE": namespace}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cityhall", "catalog", "import", str(SHIPPED)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(f"  {done.stdout.strip()}")
    return elapsed


def queries(rng: random.Random, n: int) -> list[dict[str, str]]:
    words = [s for _, subjects in generate.DEPARTMENTS.values() for s in subjects]
    words += ["証明書", "申請", "届出", "サンプル", "補助金", "戸籍", "住民票"]
    departments = list(generate.DEPARTMENTS)
    made: list[dict[str, str]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            q = {"q": rng.choice(words)}
        elif kind == 1:
            q = {"q": f"{rng.choice(words)} {rng.choice(['申請', '届', '交付'])}"}
        elif kind == 2:
            q = {"department": rng.choice(departments), "online": rng.choice(["true", "false"])}
        elif kind == 3:
            q = {"group": rng.choice(["1", "2"]), "offset": str(rng.randrange(0, 2000))}
        else:
            q = {"q": rng.choice(words), "group": "2", "online": "false"}
        q["limit"] = "50"
        made.append(q)
    return made


async def search_latencies(namespace: str, n: int) -> list[tuple[float, dict[str, str]]]:
    settings = ServiceSettings(
        service="applications",
        nats_url=NATS_URL,
        database_url=DATABASE_URL,
        namespace=namespace,
        log_level="WARNING",
    )
    # One client searching as fast as it can: time the searches, not the per-IP rate limit.
    os.environ["APPLICATIONS_RATE_LIMITS"] = "false"
    await provision_all(settings.nats_url, settings.namespace, None)  # the operator's step
    app = build_app(definition("applications"), settings)
    runtime = app.state.runtime
    app.state.ctx = await runtime.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://applications"
        ) as http:
            total = (await http.get("/procedures", params={"limit": 1})).json()["total"]
            print(f"  catalog holds {total} procedures")
            for q in queries(random.Random(1), 50):  # warm-up
                await http.get("/procedures", params=q)
            timed = []
            for q in queries(random.Random(2), n):
                started = time.perf_counter()
                resp = await http.get("/procedures", params=q)
                timed.append((time.perf_counter() - started, q))
                resp.raise_for_status()
            return timed
    finally:
        await runtime.stop()


async def cleanup(namespace: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}_applications" CASCADE')
    finally:
        await conn.close()
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(namespace.upper() + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--searches", type=int, default=1000)
    args = parser.parse_args()
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    try:
        print(f"import of {SHIPPED.name} ({SHIPPED.stat().st_size / 1e6:.1f} MB):")
        elapsed = import_catalog(namespace)
        print(f"  cityhall catalog import: {elapsed:.2f} s (target < 10 s)")
        print(f"search, {args.searches} requests through the API:")
        timed = asyncio.run(search_latencies(namespace, args.searches))
        ms = sorted(t * 1000 for t, _ in timed)
        q = statistics.quantiles(ms, n=100)
        print(f"  p50 {q[49]:.1f} ms  p95 {q[94]:.1f} ms  p99 {q[98]:.1f} ms  max {ms[-1]:.1f} ms")
        print(f"  p95 target < 50 ms: {'met' if q[94] < 50 else 'NOT met'}")
        slowest = max(timed, key=lambda t: t[0])
        print(f"  slowest: {slowest[0] * 1000:.1f} ms for {slowest[1]}")
    finally:
        asyncio.run(cleanup(namespace))


if __name__ == "__main__":
    main()
