"""Benchmark: every KPI query on a year of city data, against one reporting process.

    .venv/bin/python bench/kpi_queries.py [--json out.json]       # embedded NATS + PostgreSQL
    NATS_URL=nats://127.0.0.1:4222 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/kpi_queries.py [--applications 1000000] [--payments 2000000]

1. **A year of the city** (fiscal 2025: April 2025 to March 2026) is loaded into a fresh
   namespace's reporting schema by ``load_year``: the catalog (11 core procedures and the
   4,289 of the sample catalog, with groups, departments, online dates and planned quarters),
   ``--applications`` submissions (most to the common certificates; online share rising over
   the year) with approvals, rejections, withdrawals and certificates, ``--payments`` captures
   at the 34 facilities with every method and brand (cash falling from 60% to 35%), 2% refunded
   (in part or in full, one in ten before its capture), 1% voided, and every facility's daily
   settlement (1% not matching). The rows go through the projections themselves
   (``projections.apply_application_rows`` / ``apply_payment_rows``, the SQL the live consumer
   runs for each batch), called in large batches on two connections without NATS: the
   read-models are exactly what the events would have produced.
2. ``cityhall serve reporting`` runs as a child process (``harness.ServiceProcess``) on that
   schema; every KPI endpoint (JSON with its typical filters, CSV, open data) is requested over
   HTTP, one request at a time, in two ways, because the service keeps each encoded answer
   until a projection commits (``services/reporting/answers.py``):

   - **cold**: before each request the read-models' versions are bumped, as every projection
     batch does in its transaction (``UPDATE projection_versions``, and an update of a row of
     the latest month of usage and of facility-days, as a batch of events writes them; not
     timed), so each timed request computes its answer from PostgreSQL (queries, rows,
     encoding): what the first reader after an event waits for. An answer for past months,
     such as a department's quarter, is kept across such batches, as it is in service (its
     months' versions, migration 0013); how long these take when every month changed, after
     a rebuild, is reported apart as ``every_month_cold``;
   - **kept**: the same request repeated with nothing changing: the answer is served from
     memory after one version read (the steady state between events).

   Each gets up to ``--repetitions`` requests (fewer for a slow one: ``--budget-s``); p50/p95/
   max per endpoint and way, the worst p95 of each way, ``/metrics`` and ``/projection/lag``
   apart (operations, not KPI queries), a revalidation of the year's open data with
   ``If-None-Match`` (304), and the process's peak RSS. The client sends ``Accept-Encoding:
   gzip, deflate`` as httpx and browsers do (``--accept-encoding identity`` to compare).

It takes about 2 to 3 minutes with the full sizes on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import (  # noqa: E402
    ServiceProcess,
    cleanup,
    figure,
    load_average,
    new_namespace,
    percentile,
    progress,
    servers,
    write_results,
)

from contracts.facilities import FACILITIES, PaidFor  # noqa: E402
from contracts.payments import PaymentMethod  # noqa: E402
from services.reporting import projections  # noqa: E402
from services.reporting.app import DEFINITION  # noqa: E402
from services.reporting.demo import BRANDS, FEES  # noqa: E402
from services.reporting.domain import TOKYO  # noqa: E402
from services.reporting.projections import (  # noqa: E402
    Capture,
    Procedure,
    Reversal,
    Settlement,
    Step,
    Submission,
)
from services.runtime import db  # noqa: E402
from services.runtime.service import migrations_for  # noqa: E402

YEAR_START = datetime(2025, 4, 1, tzinfo=TOKYO)
YEAR_SECONDS = 365 * 24 * 3600
CHUNK = 25_000
CORE = (
    # code, department, group, share of all applications
    ("JUMINHYO", "市民部", 2, 0.20),
    ("KOSEKI_TOHON", "市民部", 2, 0.06),
    ("KOSEKI_SHOHON", "市民部", 2, 0.03),
    ("JOSEKI_TOHON", "市民部", 2, 0.01),
    ("KAISEI_GENKOSEKI", "市民部", 2, 0.01),
    ("KOSEKI_FUHYO", "市民部", 2, 0.02),
    ("INKAN_SHOMEI", "市民部", 2, 0.08),
    ("SHOTOKU_KAZEI_SHOMEI", "税務部", 2, 0.05),
    ("NOZEI_SHOMEI", "税務部", 2, 0.02),
    ("BOSAI_MAIL_TOROKU", "総務部", 1, 0.01),
    ("SHIMIN_NO_KOE", "政策開発部", 1, 0.01),
)
CERTIFICATES = {c[0] for c in CORE[:9]}


def _uuid(rng: random.Random, at: datetime | None = None) -> uuid.UUID:
    """Random, or time-ordered (UUIDv7's layout: milliseconds first) so that a year of ids is
    appended to the primary keys' right edge instead of all over them (the load's bottleneck)."""
    if at is None:
        return uuid.UUID(int=rng.getrandbits(128))
    return uuid.UUID(int=(int(at.timestamp() * 1000) << 80) | rng.getrandbits(80))


def catalog() -> tuple[list[Procedure], set[str]]:
    """The procedures, and the codes of those that yield a certificate (証明書)."""
    as_of = datetime(2025, 3, 1, tzinfo=UTC)
    rows = [
        Procedure(code, code, dept, group, date(2022, 4, 1), None, False, as_of)
        for code, dept, group, _ in CORE
    ]
    sample = json.loads((ROOT / "services/applications/catalog/sample_catalog.json").read_text())
    certificates = set(CERTIFICATES)
    for p in sample:
        if p["yields_certificate"]:
            certificates.add(p["code"])
        since = date.fromisoformat(p["online_since"]) if p["online_since"] else None
        rows.append(
            Procedure(
                p["code"],
                p["name_ja"],
                p["department"],
                p["group"],
                since,
                p["planned_online_quarter"],
                p["sample"],
                as_of,
            )
        )
    return rows, certificates


class Loaded:
    """What was loaded so far (for the progress line)."""

    applications = 0
    payments = 0


async def load_applications(
    conn: asyncpg.Connection,
    procedures: Sequence[Procedure],
    certificates: set[str],
    total: int,
    seed: int,
    done: Loaded,
) -> None:
    rng = random.Random(seed)
    await projections.apply_application_rows(conn, procedures)
    core = {c[0]: c[3] for c in CORE}
    others = [p.procedure_code for p in procedures if p.procedure_code not in core]
    rest = 1 - sum(core.values())
    codes = [*core, *others]
    weights = [*core.values(), *(rest / (r + 1) ** 1.1 for r in range(len(others)))]
    scale = rest / sum(weights[len(core) :])
    weights[len(core) :] = [w * scale for w in weights[len(core) :]]
    cum = [0.0] * len(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        cum[i] = acc
    seconds = sorted(rng.randrange(YEAR_SECONDS) for _ in range(total))  # a stream: in time order
    start = YEAR_START.astimezone(UTC)
    for i in range(0, total, CHUNK):
        part = seconds[i : i + CHUNK]
        picked = rng.choices(codes, cum_weights=cum, k=len(part))
        rows: list[projections.ApplicationRow] = []
        for s, code in zip(part, picked, strict=True):
            at = start + timedelta(seconds=s)
            app_id = _uuid(rng, at)
            online = 0.15 + 0.2 * s / YEAR_SECONDS
            u = rng.random()
            channel = "online" if u < online else "mail" if u < online + 0.05 else "counter"
            rows.append(Submission(app_id, code, channel, at))
            v = rng.random()
            took = timedelta(seconds=int(rng.lognormvariate(10.0, 1.3)))  # median ~6 h
            # procedures that yield a certificate: 85% issued, 5% rejected, 3% withdrawn;
            # the others: 60% approved, 6% rejected (one in ten approved after all), 3%
            # withdrawn; the rest still open
            cert, approve, reject, withdraw = (
                (0.85, 0.85, 0.90, 0.93) if code in certificates else (0.0, 0.60, 0.66, 0.69)
            )
            if v < cert:
                rows.append(Step(app_id, "certificate_issued", at + took))
            elif v < approve:
                rows.append(Step(app_id, "approved", at + took))
            elif v < reject:
                rows.append(Step(app_id, "rejected", at + took))
                if v < approve + 0.006:
                    rows.append(Step(app_id, "approved", at + 2 * took))
            elif v < withdraw:
                rows.append(Step(app_id, "withdrawn", at + took))
        async with conn.transaction():
            await projections.apply_application_rows(conn, rows)
        done.applications += len(part)


def _facility_weights() -> list[float]:
    by_kind = {
        PaidFor.CERTIFICATE_FEES: 3.0,
        PaidFor.FACILITY_USE: 1.5,
        PaidFor.ADMISSION: 1.0,
        PaidFor.PARKING_PASSES: 0.3,
    }
    return [by_kind[f.paid_for] * (6 if f.code == "shiminka" else 1) for f in FACILITIES]


async def load_payments(conn: asyncpg.Connection, total: int, seed: int, done: Loaded) -> None:
    rng = random.Random(seed + 1)
    facilities = list(FACILITIES)
    fweights = _facility_weights()
    seconds = sorted(rng.randrange(YEAR_SECONDS) for _ in range(total))
    start = YEAR_START.astimezone(UTC)
    settled: dict[tuple[str, date], int] = defaultdict(int)
    for i in range(0, total, CHUNK):
        part = seconds[i : i + CHUNK]
        places = rng.choices(facilities, weights=fweights, k=len(part))
        captures: list[projections.PaymentRow] = []
        early: list[projections.PaymentRow] = []  # refunds on the stream before their capture
        later: list[projections.PaymentRow] = []
        for s, facility in zip(part, places, strict=True):
            # business hours in Tokyo: 08:30-17:30 of the day the second falls on
            day = s // 86400
            at = start + timedelta(seconds=day * 86400 + 30600 + (s % 32400))
            cash = 0.6 - 0.25 * s / YEAR_SECONDS
            u = rng.random()
            if u < cash:
                method, brand = PaymentMethod.CASH, ""
            else:
                method = rng.choices(
                    (PaymentMethod.QR, PaymentMethod.EMONEY, PaymentMethod.CREDIT), (45, 30, 25)
                )[0]
                brand = rng.choice(BRANDS[method])
            amount = rng.choice(FEES[facility.paid_for][0])
            pid = _uuid(rng, at)
            captures.append(Capture(pid, facility.code, method.value, brand, amount, at))
            if method is not PaymentMethod.CASH:
                settled[(facility.code, (at.astimezone(TOKYO)).date())] += amount
            v = rng.random()
            if v < 0.02:
                part_yen = amount if v < 0.01 else max(1, amount // 3)
                refund = Reversal(
                    str(_uuid(rng)), pid, "refund", part_yen, at + timedelta(minutes=7)
                )
                (early if v < 0.002 else later).append(refund)
            elif v < 0.03:
                later.append(
                    Reversal(f"void:{pid}", pid, "void", amount, at + timedelta(minutes=2))
                )
        async with conn.transaction():
            if early:  # before their captures: they wait in payment_reversals
                await projections.apply_payment_rows(conn, early)
            await projections.apply_payment_rows(conn, captures)
            await projections.apply_payment_rows(conn, later)
        done.payments += len(part)
    rows: list[projections.PaymentRow] = []
    for (code, business_day), gross in sorted(settled.items()):
        as_of = datetime.combine(business_day + timedelta(days=1), datetime.min.time(), TOKYO)
        batch = f"{code}-{business_day:%Y%m%d}"
        if rng.random() < 0.01:
            rows.append(Settlement(batch, code, business_day, False, None, None, as_of))
        else:
            fee = round(gross * 0.0324)
            rows.append(Settlement(batch, code, business_day, True, gross, fee, as_of))
    async with conn.transaction():
        await projections.apply_payment_rows(conn, rows)


async def load_year(
    database_url: str, schema: str, applications: int, payments: int, seed: int = 2025
) -> None:
    """Migrate ``schema`` and load a year of the city into its read-models."""
    pool = await db.create_pool(database_url, schema, min_size=2, max_size=2)
    try:
        await db.migrate(pool, schema, migrations_for(DEFINITION))
        done = Loaded()
        procedures, certificates = catalog()

        async def with_conn(job: Any, *args: Any) -> None:
            async with pool.acquire() as conn:
                await job(conn, *args)

        jobs = asyncio.gather(
            with_conn(load_applications, procedures, certificates, applications, seed, done),
            with_conn(load_payments, payments, seed, done),
        )
        started = time.monotonic()
        while not jobs.done():
            await asyncio.wait([jobs], timeout=5)
            progress(
                f"loading: {done.applications:,}/{applications:,} applications, "
                f"{done.payments:,}/{payments:,} payments, {time.monotonic() - started:.0f} s, "
                f"load average {load_average()}"
            )
        await jobs
        async with pool.acquire() as conn:
            # What an operator does after a bulk load: otherwise autovacuum visits every
            # loaded table (the visibility map) while the queries are timed, on the same cores.
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
            )
            await conn.execute(
                "VACUUM (ANALYZE) " + ", ".join(f'"{schema}"."{t[0]}"' for t in tables)
            )
            await conn.execute("CHECKPOINT")
    finally:
        await pool.close()


async def load_in_child(database_url: str, schema: str, applications: int, payments: int) -> None:
    """``load_year`` in a process of its own. Loaded here, the year left this process (the
    client that times the queries) a heap that made two or three of every 24 or so requests
    of the year's open data 11 ms slower, cold p95 28 ms against 20 with the same service and
    data (p50 17 either way)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.get_running_loop().run_in_executor(
            pool, _load_year_sync, database_url, schema, applications, payments
        )


def _load_year_sync(database_url: str, schema: str, applications: int, payments: int) -> None:
    asyncio.run(load_year(database_url, schema, applications, payments))


# -- queries ------------------------------------------------------------------------------------

MONTH = "2025-10"
ENDPOINTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    # name, path, query
    ("by_channel", "/kpi/applications/by-channel", {}),
    ("online_usage", "/kpi/online-usage", {}),
    ("online_usage_procedure", "/kpi/online-usage", {"procedure": "JUMINHYO"}),
    (
        "online_usage_department_quarter",
        "/kpi/online-usage",
        {"department": "市民部", "from": "2025-10", "to": "2025-12"},
    ),
    ("online_usage_group", "/kpi/online-usage", {"group": "2"}),
    ("online_usage_csv_month", "/kpi/online-usage.csv", {"from": MONTH, "to": MONTH}),
    ("online_coverage", "/kpi/online-coverage", {}),
    ("online_coverage_group", "/kpi/online-coverage", {"group": "1", "from": "2025-04"}),
    ("online_coverage_csv", "/kpi/online-coverage.csv", {}),
    ("cashless_share", "/kpi/cashless-share", {}),
    ("cashless_share_facility", "/kpi/cashless-share", {"facility": "shiminka"}),
    (
        "cashless_share_method_month",
        "/kpi/cashless-share",
        {"method": "qr", "from": MONTH, "to": MONTH},
    ),
    ("cashless_share_brand", "/kpi/cashless-share", {"brand": "PayPay"}),
    (
        "cashless_share_csv_facility_month",
        "/kpi/cashless-share.csv",
        {"facility": "shiminka", "from": MONTH, "to": MONTH},
    ),
    ("revenue", "/kpi/revenue", {}),
    ("revenue_facility", "/kpi/revenue", {"facility": "shiminka"}),
    ("revenue_month", "/kpi/revenue", {"from": MONTH, "to": MONTH}),
    ("revenue_method_month", "/kpi/revenue", {"method": "credit", "from": MONTH, "to": MONTH}),
    ("revenue_csv_month", "/kpi/revenue.csv", {"from": MONTH, "to": MONTH}),
    ("turnaround", "/kpi/certificate-turnaround", {}),
    ("turnaround_procedure", "/kpi/certificate-turnaround", {"procedure": "JUMINHYO"}),
    (
        "turnaround_department_quarter",
        "/kpi/certificate-turnaround",
        {"department": "市民部", "from": "2025-10", "to": "2025-12"},
    ),
    ("turnaround_csv_month", "/kpi/certificate-turnaround.csv", {"from": MONTH, "to": MONTH}),
    ("open_data", "/open-data/kpi", {}),
    ("open_data_quarter", "/open-data/kpi", {"from": "2025-10", "to": "2025-12"}),
)  # fmt: skip
EVERY_MONTH = ("revenue", "turnaround_department_quarter", "open_data")
"""Also measured when every month changed (after a rebuild): the answers built from month
parts, and one kept by its period's months."""
OPERATIONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("metrics", "/metrics", {}),
    ("projection_lag", "/projection/lag", {}),
)


Bump = Callable[[], Awaitable[None]]


WARM_UP = 10
"""Untimed requests before an endpoint's timed ones, made the same way (bump included): the
service's pool rotates over its connections, and each connection meets a statement for the
first time once (its preparation, PostgreSQL's first custom plans, asyncpg's look-up of the
types it returns). With two warm-up requests made without a bump, the first dozen timed cold
requests of the year's open data were 5-13 ms slower than the rest."""


async def measure(
    http: httpx.AsyncClient,
    path: str,
    query: dict[str, str],
    repetitions: int,
    budget_s: float,
    before_each: Bump | None = None,
    headers: dict[str, str] | None = None,
    expect: int = 200,
) -> tuple[list[float], int, int]:
    """Latencies (ms) of ``repetitions`` sequential requests, after ``WARM_UP`` requests made
    the same way, the decoded response size and the size on the wire. ``before_each`` runs
    before every request, untimed (the cold way: a version bump). A slow endpoint gets fewer:
    once ``budget_s`` has run out and there are 20 (or 5 after four times the budget)."""
    size = wire = 0
    for _ in range(WARM_UP):
        if before_each is not None:
            await before_each()
        resp = await http.get(path, params=query, headers=headers)
        assert resp.status_code == expect, (path, resp.status_code, resp.text[:300])
        size = len(resp.content)
        wire = int(resp.headers.get("content-length", size))
    times: list[float] = []
    started = time.monotonic()
    while len(times) < repetitions:
        spent = time.monotonic() - started
        if (spent > budget_s and len(times) >= 20) or (spent > 4 * budget_s and len(times) >= 5):
            break
        if before_each is not None:
            await before_each()
        t = time.perf_counter()
        resp = await http.get(path, params=query, headers=headers)
        _ = resp.content  # read and decoded (gzip) before the clock stops
        times.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == expect, (path, resp.status_code)
    return times, size, wire


def report(name: str, way: str, times: list[float], size: int, wire: int, group: str) -> float:
    p95 = percentile(times, 95)
    figure(
        f"queries.{name}_{way}_p95_ms",
        round(p95, 1),
        "ms",
        f"p50 {percentile(times, 50):.1f} max {max(times):.1f} n={len(times)} "
        f"{size / 1024:.0f} KiB ({wire / 1024:.0f} on the wire) {group}",
    )
    return p95


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--payments", type=int, default=2_000_000)
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument(
        "--budget-s", type=float, default=3.0, help="at most this long per endpoint (≥20 reps)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the loaded schema")
    parser.add_argument(
        "--accept-encoding", default="gzip, deflate", help="the client's Accept-Encoding"
    )
    parser.add_argument(
        "--reuse", metavar="NAMESPACE", help="query a namespace kept by --keep (no load)"
    )
    parser.add_argument(
        "--only", metavar="NAME,…", help="only these endpoints (names as printed: open_data,…)"
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    with servers() as srv:
        namespace = args.reuse or new_namespace("kpi")
        schema = f"{namespace}_reporting"
        try:
            if not args.reuse:
                progress(f"load average {load_average()}; loading a year into {schema}")
                started = time.monotonic()
                await load_in_child(srv.database_url, schema, args.applications, args.payments)
                loaded_s = time.monotonic() - started
                figure("queries.load_seconds", loaded_s, "s", f"load average {load_average()}")
            conn = await asyncpg.connect(srv.database_url)
            try:
                sizes = await conn.fetch(
                    """SELECT relname, n_live_tup FROM pg_stat_user_tables
                       WHERE schemaname = $1 ORDER BY relname""",
                    schema,
                )
            finally:
                await conn.close()
            progress(", ".join(f"{r['relname']} {r['n_live_tup']:,}" for r in sizes))

            # /metrics and /projection/lag are operators'; queries are timed without rate limits.
            operator = "bench-reporting-operator-token"
            service = ServiceProcess(
                "reporting",
                srv.nats_url,
                srv.database_url,
                namespace,
                env={
                    "REPORTING_STAFF_TOKENS": f"bench={operator}",
                    "REPORTING_RATE_LIMITS": "false",
                },
            )
            service.start()
            try:
                await service.wait_ready()
                versions = await asyncpg.connect(srv.database_url)
                latest = await versions.fetchrow(
                    f"""SELECT month, procedure_code FROM "{schema}".applications_month_procedure
                        ORDER BY month DESC, procedure_code LIMIT 1"""
                )
                latest_day = await versions.fetchrow(
                    f"""SELECT day, facility_code FROM "{schema}".payments_facility_days
                        ORDER BY day DESC, facility_code LIMIT 1"""
                )

                async def bump() -> None:
                    """What the projection batches of both families do in their transactions:
                    the families' versions, and rows of the latest month (the one events
                    arrive in; the usage table's triggers move that month's version)."""
                    async with versions.transaction():
                        await versions.execute(
                            f'UPDATE "{schema}".projection_versions SET version = version + 1'
                        )
                        await versions.execute(
                            f"""UPDATE "{schema}".applications_month_procedure SET online = online
                                WHERE month = $1 AND procedure_code = $2""",
                            *latest,
                        )
                        await versions.execute(
                            f"""UPDATE "{schema}".payments_facility_days SET count = count
                                WHERE day = $1 AND facility_code = $2""",
                            *latest_day,
                        )

                async def bump_every_month() -> None:
                    """As after a rebuild: every month of every read-model is new."""
                    await bump()
                    await versions.execute(
                        f"""UPDATE "{schema}".read_model_months
                            SET version = nextval('"{schema}".read_model_month_version')"""
                    )

                try:
                    async with httpx.AsyncClient(
                        base_url=service.url,
                        timeout=60,
                        headers={
                            "Authorization": f"Bearer {operator}",
                            "Accept-Encoding": args.accept_encoding,
                        },
                    ) as http:
                        progress(f"queries, load average {load_average()}")
                        worst = {"cold": 0.0, "kept": 0.0}
                        for group, endpoints in (("kpi", ENDPOINTS), ("ops", OPERATIONS)):
                            for name, path, query in endpoints:
                                if only is not None and name not in only:
                                    continue
                                for way, before in (("cold", bump), ("kept", None)):
                                    times, size, wire = await measure(
                                        http, path, query, args.repetitions, args.budget_s, before
                                    )
                                    p95 = report(name, way, times, size, wire, group)
                                    if group == "kpi":
                                        worst[way] = max(worst[way], p95)
                        # a client (or a proxy) that has the year's open data asks again
                        resp = await http.get("/open-data/kpi")
                        times, size, wire = await measure(
                            http,
                            "/open-data/kpi",
                            {},
                            args.repetitions,
                            args.budget_s,
                            headers={"If-None-Match": resp.headers["etag"]},
                            expect=304,
                        )
                        report("open_data", "revalidated", times, size, wire, "kpi (304)")
                        # after a rebuild, or anything else that changes every month at once
                        # (and for an answer of past months, kept across batches of this one:
                        # what it costs when its own months change)
                        rare = [
                            e
                            for e in ENDPOINTS
                            if e[0] in EVERY_MONTH and (only is None or e[0] in only)
                        ]
                        for name, path, query in rare:
                            times, size, wire = await measure(
                                http, path, query, args.repetitions, args.budget_s, bump_every_month
                            )
                            report(name, "every_month_cold", times, size, wire, "kpi (rare)")
                        for way in ("cold", "kept"):
                            figure(
                                f"queries.worst_{way}_p95_ms",
                                round(worst[way], 1),
                                "ms",
                                f"KPI endpoints, {way}; load average {load_average()}",
                            )
                finally:
                    await versions.close()
                figure("queries.reporting_peak_rss_mb", round(service.peak_rss_mb(), 1), "MB")
            finally:
                service.stop()
        finally:
            if not (args.keep or args.reuse):
                await cleanup(srv.nats_url, srv.database_url, namespace)
            else:
                progress(f"kept schema {schema}")
    write_results(args.json)


if __name__ == "__main__":
    asyncio.run(main())
