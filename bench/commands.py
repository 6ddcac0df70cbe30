"""Benchmark: citizens' online applications (POST /applications) against one applications process.

    .venv/bin/python bench/commands.py [--json out.json]        # embedded NATS + PostgreSQL
    NATS_URL=nats://127.0.0.1:4222 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/commands.py [--json out.json]    # servers already running

``cityhall serve applications`` runs as a child process (``harness.ServiceProcess``). Each
request is what a signed-in citizen sends: ``Authorization: Bearer <jwt>`` (the login
gateway's token for one of ``--applicants`` accounts, signed HS256 with the benchmark's own
``APPLICANT_JWT_SECRET``), a unique ``Idempotency-Key`` and a 市民の声 (SHIMIN_NO_KOE: group 1,
no fee) form, so every request runs the whole command: token verified, caller counted against
its rate limit (on, as in production, unless ``--no-rate-limits``; the service's defaults:
20/s and 600/min per applicant, which 5,000 accounts at 1,000 requests/s stay far below), key
claimed, form checked against the procedure's JSON
Schema, application and ApplicationSubmitted (outbox) written, response kept with the key,
all in one transaction.

1. **Maximum throughput** (closed loop): ``--workers`` generator processes keep
   ``--concurrency`` keep-alive HTTP/1.1 connections busy for ``--max-seconds``; requests/s
   with p50/p99 latency.
2. **Latency at a paced rate** (open loop): ``--rate`` requests/s on schedule for
   ``--paced-seconds``, each latency measured from the time the request was *due*, so a slow
   response delays nothing unseen (no coordinated omission); p50/p95/p99/max.
3. The process's peak RSS (VmHWM) and CPU seconds, the status codes seen (anything but 201 is
   a failure), and that every accepted application's ApplicationSubmitted left the outbox
   (marked published and present in the stream).

The load generator is a small asyncio client writing raw requests over its own connections
(an httpx client tops out near 1-2k requests/s per process); its CPU per request is printed
so one can see it is not the limit. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import multiprocessing
import random
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ServiceProcess,
    busy_share,
    cleanup,
    figure,
    load_average,
    machine_busy,
    new_namespace,
    percentile,
    progress,
    servers,
    write_results,
)

from contracts.applications import ApplicationSubmittedV1
from services.runtime.auth import mint_applicant_token

PROCEDURE = "SHIMIN_NO_KOE"
APPLICANT_SECRET = "bench-applicant-jwt-secret-0123456789"
SUBMITTED_TYPE = ApplicationSubmittedV1.event_type
SUBMITTED_SUBJECT = ApplicationSubmittedV1.subject
GRACE_S = 10.0
"""How long after its last request a load run waits for answers (then: timeouts)."""
TOPICS = [
    "公園のベンチ",
    "ごみの収集日",
    "図書館の開館時間",
    "道路の街灯",
    "バスの本数",
    "子育て支援",
]


# -- the load generator (runs in worker processes) -----------------------------------------------


def _request(host: str, token: str, n: int) -> bytes:
    topic = TOPICS[n % len(TOPICS)]
    body = json.dumps(
        {
            "procedure_code": PROCEDURE,
            "form": {"subject": topic, "body": f"{topic}について、改善をお願いします。（{n}）"},
        },
        ensure_ascii=False,
    ).encode()
    head = (
        f"POST /applications HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Idempotency-Key: {uuid.uuid4()}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read status and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Load:
    """What one generator process saw."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    max_send_lag_s: float = 0.0
    """Paced runs: how late the generator sent a request it was due to send (its own limit)."""


@dataclass(frozen=True)
class LoadPlan:
    port: int
    start_at: float
    """time.time() at which every generator starts (so workers start together)."""
    seconds: float
    connections: int
    applicants: list[str]
    """Their tokens (what the gateway gave each citizen)."""
    rate: float = 0.0
    """0: closed loop (each connection sends its next request when the last is answered);
    otherwise requests/s, sent on schedule (open loop)."""
    seed: int = 0


def generate(plan: LoadPlan) -> Load:
    """Entry point of a generator process."""
    return asyncio.run(_generate(plan))


async def _generate(plan: LoadPlan) -> Load:
    load = Load()
    rng = random.Random(plan.seed)
    host = f"127.0.0.1:{plan.port}"
    conns = [await Connection.open(plan.port) for _ in range(plan.connections)]
    counter = iter(range(plan.seed * 10_000_000, (plan.seed + 1) * 10_000_000))
    cpu0 = _cpu_s()
    await asyncio.sleep(max(0.0, plan.start_at - time.time()))
    started = time.perf_counter()
    end = started + plan.seconds

    async def one(conn: Connection, due: float) -> Connection | None:
        request = _request(host, rng.choice(plan.applicants), next(counter))
        try:
            status = await conn.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            load.statuses[f"error:{type(exc).__name__}"] += 1
            conn.close()
            return None
        load.latencies_s.append(time.perf_counter() - due)
        load.statuses[str(status)] += 1
        return conn

    async def closed_loop(conn: Connection) -> None:
        current: Connection | None = conn
        while current is not None and time.perf_counter() < end:
            current = await one(current, time.perf_counter())

    if plan.rate <= 0:
        loops = [asyncio.create_task(closed_loop(c)) for c in conns]
        _done, stuck = await asyncio.wait(loops, timeout=plan.seconds + GRACE_S)
        for task in stuck:  # a request unanswered GRACE_S after the end
            task.cancel()
            load.statuses["timeout"] += 1
    else:
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for c in conns:
            idle.put_nowait(c)

        async def paced(due: float) -> None:
            conn = await idle.get()  # waiting for a free connection counts in the latency
            done = await one(conn, due)
            idle.put_nowait(done if done is not None else await Connection.open(plan.port))

        tasks = {}
        total = int(plan.seconds * plan.rate)
        for i in range(total):
            due = started + i / plan.rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                load.max_send_lag_s = max(load.max_send_lag_s, -wait)
            tasks[asyncio.create_task(paced(due))] = due
        # A service that cannot keep up would make the run last as long as its backlog: give
        # up GRACE_S after the last send, counting what is unanswered as timeouts (with
        # the time waited so far as their latency, so the percentiles still show them).
        _done, late = await asyncio.wait(tasks, timeout=GRACE_S)
        gave_up = time.perf_counter()
        for task in late:
            task.cancel()
            load.statuses["timeout"] += 1
            load.latencies_s.append(gave_up - tasks[task])
    load.elapsed_s = time.perf_counter() - started
    load.cpu_s = _cpu_s() - cpu0
    for c in conns:
        c.close()
    return load


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_load(pool: concurrent.futures.Executor, plans: list[LoadPlan]) -> Load:
    """Run the plans in the generator processes and merge what they saw."""
    merged = Load()
    for load in pool.map(generate, plans):
        merged.latencies_s.extend(load.latencies_s)
        merged.statuses.update(load.statuses)
        merged.elapsed_s = max(merged.elapsed_s, load.elapsed_s)
        merged.cpu_s += load.cpu_s
        merged.max_send_lag_s = max(merged.max_send_lag_s, load.max_send_lag_s)
    return merged


def plans(
    port: int, applicants: list[str], *, workers: int, connections: int, seconds: float, rate: float
) -> list[LoadPlan]:
    start_at = time.time() + 1.0  # time for the workers to open their connections
    per = max(1, connections // workers)
    return [
        LoadPlan(port, start_at, seconds, per, applicants, rate / workers, seed=n + 1)
        for n in range(workers)
    ]


# -- checks -------------------------------------------------------------------------------------


async def outbox_caught_up(svc: ServiceProcess, timeout_s: float) -> tuple[int, float]:
    """(unpublished outbox rows now, seconds until there were none, at most ``timeout_s``)."""
    conn = await asyncpg.connect(svc.database_url, server_settings={"search_path": svc.schema})
    try:
        started = time.monotonic()
        query = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        backlog = pending = int(await conn.fetchval(query))
        while pending and time.monotonic() - started < timeout_s:
            await asyncio.sleep(0.1)
            pending = int(await conn.fetchval(query))
        return backlog, time.monotonic() - started
    finally:
        await conn.close()


async def outbox_drained(svc: ServiceProcess, accepted: int, timeout_s: float) -> dict[str, int]:
    """Wait until every ApplicationSubmitted row is published; count rows and stream messages."""
    conn = await asyncpg.connect(svc.database_url, server_settings={"search_path": svc.schema})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            row = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM applications) AS applications,
                          count(*) FILTER (WHERE published_at IS NOT NULL) AS published,
                          count(*) FILTER (WHERE published_at IS NULL) AS pending
                   FROM outbox WHERE ce_type = $1""",
                SUBMITTED_TYPE,
            )
            assert row is not None
            if row["pending"] == 0 and row["published"] >= accepted:
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    nc = await nats.connect(svc.nats_url)
    try:
        js = nc.jetstream()
        subject = f"{svc.namespace}.{SUBMITTED_SUBJECT}"
        info = await js.stream_info(
            f"{svc.namespace.upper()}_APPLICATIONS", subjects_filter=subject
        )
        in_stream = int((info.state.subjects or {}).get(subject, 0))
    finally:
        await nc.close()
    return {
        "applications": int(row["applications"]),
        "published": int(row["published"]),
        "pending": int(row["pending"]),
        "in_stream": in_stream,
    }


# -- the run ------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def report_latency(prefix: str, load: Load, points: tuple[int, ...]) -> None:
    lat = load.latencies_s
    for p in points:
        figure(f"{prefix}_p{p}_ms", ms(percentile(lat, p)), "ms")
    figure(f"{prefix}_max_ms", ms(max(lat) if lat else 0.0), "ms")


def run(args: argparse.Namespace) -> list[str]:
    """The benchmark; returns the failed checks."""
    failures: list[str] = []
    statuses: collections.Counter[str] = collections.Counter()
    rng = random.Random(7)
    applicants = [
        mint_applicant_token(
            uuid.UUID(int=rng.getrandbits(128), version=4), APPLICANT_SECRET, lifetime_s=3600
        )
        for _ in range(args.applicants)
    ]
    ctx = multiprocessing.get_context("spawn")
    with (
        servers() as srv,
        concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool,
    ):
        namespace = new_namespace("cmd")
        env = {"APPLICANT_JWT_SECRET": APPLICANT_SECRET}
        if not args.rate_limits:
            env["APPLICATIONS_RATE_LIMITS"] = "false"
        if args.db_pool_max:
            env["DB_POOL_MAX"] = str(args.db_pool_max)
        svc = ServiceProcess("applications", srv.nats_url, srv.database_url, namespace, env=env)
        try:
            svc.start()
            asyncio.run(svc.wait_ready())
            progress(f"applications ready (pid {svc.pid}, port {svc.port}); load {load_average()}")
            figure("commands.rate_limits", "on" if args.rate_limits else "off")
            cpu_start = svc.cpu_s()

            progress("warm-up: 3 s")
            warm = run_load(
                pool,
                plans(svc.port, applicants, workers=args.workers, connections=8, seconds=3, rate=0),
            )
            statuses.update(warm.statuses)

            progress(f"maximum throughput: {args.concurrency} connections, {args.max_seconds} s")
            cpu0, busy0, load_at = svc.cpu_s(), machine_busy(), load_average()
            top = run_load(
                pool,
                plans(
                    svc.port,
                    applicants,
                    workers=args.workers,
                    connections=args.concurrency,
                    seconds=args.max_seconds,
                    rate=0,
                ),
            )
            top_cpu, top_busy = svc.cpu_s() - cpu0, busy_share(busy0, machine_busy())
            statuses.update(top.statuses)
            done = len(top.latencies_s)
            figure(
                "commands.post_max_per_s",
                round(done / top.elapsed_s, 1),
                "req/s",
                f"{args.concurrency} connections, {args.workers} generators, load {load_at}",
            )
            figure("commands.post_max_p50_ms", ms(percentile(top.latencies_s, 50)), "ms")
            figure("commands.post_max_p99_ms", ms(percentile(top.latencies_s, 99)), "ms")
            figure(
                "commands.post_max_service_cpu_ms_per_req",
                round(top_cpu * 1000 / max(done, 1), 3),
                "ms",
                f"{top_cpu / top.elapsed_s:.0%} of one core",
            )
            figure(
                "commands.post_max_generator_cpu_ms_per_req",
                round(top.cpu_s * 1000 / max(done, 1), 3),
                "ms",
                f"{top.cpu_s / top.elapsed_s:.0%} of one core in all",
            )
            figure("commands.post_max_machine_busy", f"{top_busy:.0%}", "", "both cores")

            # The relay publishes in the same process: let it catch up from the burst first, so
            # the paced run measures a steady state (and say how far behind it was).
            backlog, catch_up_s = asyncio.run(outbox_caught_up(svc, timeout_s=30))
            figure(
                "commands.outbox_backlog_after_max",
                backlog,
                "rows",
                f"unpublished when the closed loop ended; published {catch_up_s:.1f} s later",
            )
            time.sleep(max(0.0, 2 - catch_up_s))
            progress(f"paced: {args.rate:g} req/s for {args.paced_seconds} s (open loop)")
            cpu0, load_at = svc.cpu_s(), load_average()
            paced = run_load(
                pool,
                plans(
                    svc.port,
                    applicants,
                    workers=1,
                    connections=64,
                    seconds=args.paced_seconds,
                    rate=args.rate,
                ),
            )
            paced_cpu = svc.cpu_s() - cpu0
            statuses.update(paced.statuses)
            rate = int(args.rate)
            answered = len(paced.latencies_s) - paced.statuses["timeout"]
            figure(
                f"commands.post_at_{rate}_answered_per_s",
                round(answered / paced.elapsed_s, 1),
                "req/s",
                f"{answered} of {len(paced.latencies_s)} sent, load {load_at}",
            )
            report_latency(f"commands.post_at_{rate}", paced, (50, 95, 99))
            figure(
                f"commands.post_at_{rate}_service_cpu",
                f"{paced_cpu / paced.elapsed_s:.0%}",
                "",
                "of one core",
            )
            figure(
                "commands.generator_max_send_lag_ms",
                ms(paced.max_send_lag_s),
                "ms",
                "how late the paced generator sent (its own limit)",
            )

            accepted = statuses["201"] + statuses["200"]
            progress("waiting for the outbox to drain")
            drained = asyncio.run(outbox_drained(svc, accepted, timeout_s=30))
            figure("commands.applications_peak_rss_mb", round(svc.peak_rss_mb(), 1), "MB")
            figure("commands.applications_cpu_s", round(svc.cpu_s() - cpu_start, 1), "s")
            measured = done + answered
            figure(
                "commands.applications_cpu_us_per_post",
                round((top_cpu + paced_cpu) * 1e6 / max(measured, 1)),
                "us",
                "service CPU per request, maximum and paced runs together",
            )
            shown = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
            figure("commands.status_codes", shown)
            figure("commands.accepted", accepted)
            figure("commands.submitted_published", drained["published"], "", "outbox rows")
            figure("commands.submitted_in_stream", drained["in_stream"], "", "JetStream")
            figure("commands.load_average_end", load_average())

            refused = {k: v for k, v in statuses.items() if k not in ("201", "200")}
            if refused:
                failures.append(f"responses other than 201/200: {refused}")
            if drained["applications"] != accepted:
                failures.append(
                    f"{accepted} accepted but {drained['applications']} applications stored"
                )
            if drained["pending"] or drained["published"] != accepted:
                failures.append(
                    f"outbox: {drained['published']} ApplicationSubmitted published, "
                    f"{drained['pending']} pending, {accepted} accepted"
                )
            if drained["in_stream"] != accepted:
                failures.append(f"stream holds {drained['in_stream']} of {accepted} events")
            if svc.peak_rss_mb() >= 200:
                failures.append(f"applications peak RSS {svc.peak_rss_mb():.0f} MB >= 200 MB")
        finally:
            if svc.process is not None and svc.process.poll() is not None:
                failures.append(f"applications exited early:\n{svc.tail()}")
            svc.stop()
            asyncio.run(cleanup(srv.nats_url, srv.database_url, namespace))
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument("--concurrency", type=int, default=32, help="connections, max run")
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=300.0, help="requests/s, paced run")
    parser.add_argument("--paced-seconds", type=float, default=18.0)
    parser.add_argument("--applicants", type=int, default=5000, help="distinct citizens")
    parser.add_argument("--db-pool-max", type=int, default=0, help="DB_POOL_MAX (0: default)")
    parser.add_argument(
        "--rate-limits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the service's per-caller rate limits, as in production (on by default; "
        "--no-rate-limits to see what counting costs)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    failures = run(args)
    figure("commands.wall_s", round(time.monotonic() - started, 1), "s")
    write_results(args.json, {"section": "commands", "failures": failures})
    if failures:
        for f in failures:
            print(f"FAILED: {f}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
