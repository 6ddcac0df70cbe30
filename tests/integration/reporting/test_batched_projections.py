"""Set-based projections: a batch of events has the effects of its events applied one by one
(duplicates inside one batch, a refund before its capture inside one batch, in either order),
on real PostgreSQL. The projections are called directly, so each test decides the batches."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any

import asyncpg
import pytest

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureRegisteredV1,
    ProcedureUpdatedV1,
)
from contracts.envelope import Envelope
from services.reporting import store
from services.reporting.app import DEFINITION
from services.reporting.domain import ReversalExceedsCapture
from services.reporting.subscribers import APPLICATION_PROJECTIONS, PAYMENT_PROJECTIONS
from services.runtime import db
from services.runtime.consumer import Batched
from services.runtime.service import migrations_for
from tests.integration.reporting.events import (
    capture,
    procedure,
    refund,
    settlement_mismatch,
    settlement_reconciled,
    step,
    submitted_with_id,
    void,
)


async def _schema(database_url: str, name: str) -> asyncpg.Pool:
    pool = await db.create_pool(database_url, name, min_size=1, max_size=2)
    await db.migrate(pool, name, migrations_for(DEFINITION))
    return pool


@pytest.fixture
async def pools(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """Two fresh reporting schemas (dropped with the test's other schemas)."""
    batched = await _schema(database_url, f"{namespace}_batched")
    single = await _schema(database_url, f"{namespace}_single")
    try:
        yield batched, single
    finally:
        await batched.close()
        await single.close()


def _again(env: Envelope[Any]) -> Envelope[Any]:
    """The same fact announced again under a new event id (only the projection can tell)."""
    return Envelope.new(env.data, source="/cityhall/tests")


async def apply(pool: asyncpg.Pool, events: Sequence[Envelope[Any]]) -> None:
    """One batch, as the consumer applies it: each run of one projection in one call."""
    async with pool.acquire() as conn, conn.transaction():
        run: list[Envelope[Any]] = []
        for env in events:
            if run and _projection(env) is not _projection(run[0]):
                await _projection(run[0]).apply(conn, run)
                run = []
            run.append(env)
        if run:
            await _projection(run[0]).apply(conn, run)


def _projection(env: Envelope[Any]) -> Batched:
    handler = PAYMENT_PROJECTIONS.get(type(env.data)) or APPLICATION_PROJECTIONS[type(env.data)]
    assert isinstance(handler, Batched)
    return handler


async def tables(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in store.READ_MODEL_TABLES:
        rows = await pool.fetch(f"SELECT * FROM {table}")
        out[table] = sorted((tuple(r.values()) for r in rows), key=repr)
    return out


async def payments(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT coalesce(sum(count), 0) AS n, coalesce(sum(amount_yen), 0) AS yen "
        "FROM payments_daily"
    )
    assert row is not None
    return int(row["n"]), int(row["yen"])


async def test_a_capture_announced_twice_in_one_batch_counts_once(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = pools
    first = capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00")
    await apply(pool, [first, _again(first), capture("shiminka", "cash", None, 200, "2026-10-05")])
    assert await payments(pool) == (2, 500)
    await apply(pool, [_again(first)])  # and in a later batch
    assert await payments(pool) == (2, 500)


async def test_a_submission_and_its_steps_announced_twice_in_one_batch_count_once(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = pools
    app_id = uuid.uuid4()
    sub = submitted_with_id(app_id, "online", "JUMINHYO", "2026-10-01 09:00")
    cert = step(
        CertificateIssuedV1, app_id, "JUMINHYO", "2026-10-01 11:00", certificate_number="c-1"
    )
    await apply(pool, [sub, cert, _again(sub), _again(cert)])
    assert await pool.fetchval("SELECT sum(count) FROM applications_monthly") == 1
    [row] = await store.turnaround_by(pool, [], store.ApplicationFilter())
    assert (row["submitted"], row["completed"], row["certificates_issued"]) == (1, 1, 1)
    assert row["median_seconds"] == 7200.0


@pytest.mark.parametrize("refund_first", [True, False], ids=["refund-first", "capture-first"])
async def test_a_refund_and_its_capture_in_one_batch_in_either_order(
    pools: tuple[asyncpg.Pool, asyncpg.Pool], refund_first: bool
) -> None:
    pool, _ = pools
    pid = uuid.uuid4()
    cap = capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00", pid)
    partial = refund(pid, 100, 100, "2026-10-05 12:00")
    rest = refund(pid, 200, 300, "2026-10-05 13:00")
    other = capture("shiminka", "qr", "PayPay", 450, "2026-10-05 09:30")
    batch = [partial, cap, other] if refund_first else [cap, other, partial]
    await apply(pool, batch)
    assert await payments(pool) == (2, 650)
    assert await pool.fetchval("SELECT count(*) FROM payment_reversals WHERE NOT applied") == 0
    await apply(pool, [rest, _again(rest)])  # refunded in full: no longer counted
    assert await payments(pool) == (1, 450)
    assert await pool.fetchval("SELECT min(count) FROM payments_daily") >= 0


async def test_refunds_and_a_void_waiting_for_their_capture_are_applied_with_it(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = pools
    pid, voided = uuid.uuid4(), uuid.uuid4()
    await apply(pool, [refund(pid, 100, 100, "2026-10-05 12:00"), void(voided, 300, "2026-10-06")])
    assert await payments(pool) == (0, 0)  # nothing to take them from yet, nothing negative
    await apply(
        pool,
        [
            refund(pid, 50, 150, "2026-10-05 13:00"),  # waits too: the capture comes after it
            capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00", pid),
            capture("shiminka", "cash", None, 300, "2026-10-06 09:00", voided),
        ],
    )
    assert await payments(pool) == (1, 150)
    row = await pool.fetchrow("SELECT * FROM payment_captures WHERE payment_id = $1", pid)
    assert row is not None
    assert row["refunded_yen"] == 150


async def test_a_refund_above_the_capture_in_a_batch_is_refused(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = pools
    pid = uuid.uuid4()
    cap = capture("shiminka", "qr", "PayPay", 300, "2026-10-05 09:00", pid)
    with pytest.raises(ReversalExceedsCapture, match="refund of 400 yen exceeds the 300 yen"):
        await apply(pool, [cap, refund(pid, 400, 400, "2026-10-05 10:00")])
    assert await payments(pool) == (0, 0)  # the transaction is rolled back


async def test_a_completion_after_a_rejection_moves_the_application_to_completed(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = pools
    app_id = uuid.uuid4()
    await apply(
        pool,
        [
            step(ApplicationRejectedV1, app_id, "KOSEKI", "2026-11-04 09:00", reason="不備"),
            submitted_with_id(app_id, "mail", "KOSEKI", "2026-11-03 09:00"),
        ],
    )
    [row] = await store.turnaround_by(pool, [], store.ApplicationFilter())
    assert (row["submitted"], row["completed"], row["closed"]) == (1, 0, 1)
    await apply(pool, [step(ApplicationApprovedV1, app_id, "KOSEKI", "2026-11-05 09:00")])
    [row] = await store.turnaround_by(pool, [], store.ApplicationFilter())
    assert (row["submitted"], row["completed"], row["closed"]) == (1, 1, 0)


def _mixed_events(rng: random.Random) -> list[Envelope[Any]]:
    """Every kind of event reporting takes, with duplicates, reversals before and after their
    captures, steps before and after their submissions, and catalog facts out of order."""
    out: list[Envelope[Any]] = []
    for n in range(60):
        pid = uuid.uuid4()
        amount = rng.choice((300, 450, 1000))
        method, brand = rng.choice((("qr", "PayPay"), ("cash", None), ("credit", "Visa")))
        day = f"2026-{rng.choice((10, 11))}-{rng.randrange(1, 28):02d}"
        cap = capture(
            rng.choice(("shiminka", "bijutsukan")), method, brand, amount, f"{day} 09:00", pid
        )
        group = [cap]
        if n % 3 == 0:
            group.append(
                refund(pid, amount // 3, amount // 3, f"{day} 10:00", method=method, brand=brand)
            )
        if n % 5 == 0:
            group.append(
                refund(
                    pid, amount - amount // 3, amount, f"{day} 11:00", method=method, brand=brand
                )
            )
        if n % 7 == 0:
            group.append(void(pid, amount, f"{day} 09:05", method=method, brand=brand))
        if n % 4 == 0:
            group.append(_again(rng.choice(group)))
        rng.shuffle(group)
        out += group
    for n in range(60):
        app_id = uuid.uuid4()
        code = rng.choice(("JUMINHYO", "KOSEKI", "INKAN"))
        hour = rng.randrange(1, 20)
        group = [
            submitted_with_id(
                app_id, rng.choice(("online", "counter", "mail")), code, "2026-10-01 09:00"
            )
        ]
        if n % 2 == 0:
            group.append(
                step(
                    CertificateIssuedV1,
                    app_id,
                    code,
                    f"2026-10-{1 + hour:02d} 09:00",
                    certificate_number=f"c-{n}",
                )
            )
        if n % 3 == 0:
            group.append(step(ApplicationApprovedV1, app_id, code, "2026-10-02 09:00"))
        if n % 5 == 0:
            group.append(
                step(ApplicationRejectedV1, app_id, code, "2026-10-03 09:00", reason="不備")
            )
        if n % 7 == 0:
            group.append(step(ApplicationWithdrawnV1, app_id, code, "2026-10-04 09:00"))
        if n % 4 == 0:
            group.append(_again(rng.choice(group)))
        rng.shuffle(group)
        out += group
    out += [
        procedure(
            ProcedureRegisteredV1, "JUMINHYO", "市民部", 2, "2021-04-01", None, "2026-09-01 09:00"
        ),
        procedure(ProcedureUpdatedV1, "JUMINHYO", "税務部", 2, None, None, "2026-08-01 09:00"),
        procedure(
            ProcedureRegisteredV1, "KOSEKI", "市民部", 1, None, "2026-Q3", "2026-09-01 09:00"
        ),
        procedure(
            ProcedureUpdatedV1, "KOSEKI", "市民部", 1, "2026-11-01", "2026-Q3", "2026-11-01 09:00"
        ),
        settlement_reconciled("s-1", "2026-10-05", 3600, 108),
        settlement_mismatch("s-1", "2026-10-05"),
        settlement_reconciled("s-2", "2026-10-06", 1000, 30, facility="bijutsukan"),
    ]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_batch_has_the_effects_of_its_events_one_by_one(
    pools: tuple[asyncpg.Pool, asyncpg.Pool], seed: int
) -> None:
    batched, single = pools
    rng = random.Random(seed)
    events = _mixed_events(rng)
    # Refunds above their capture are refused alone (the runtime retries event by event).
    i = 0
    while i < len(events):
        size = rng.choice((1, 7, 64, 256))
        try:
            await apply(batched, events[i : i + size])
        except ReversalExceedsCapture:
            for env in events[i : i + size]:
                with contextlib.suppress(ReversalExceedsCapture):
                    await apply(batched, [env])
        i += size
    for env in events:
        with contextlib.suppress(ReversalExceedsCapture):
            await apply(single, [env])
    assert await tables(batched) == await tables(single)
    assert await pool_min_counts(batched) >= 0


async def pool_min_counts(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            """SELECT least(min(d.count), min(d.amount_yen), min(t.submitted), min(t.completed),
                            min(t.closed), min(t.certificates_issued))
               FROM payments_daily d, turnaround_monthly t"""
        )
    )


ROLLUPS = {
    "payments_monthly": """SELECT date_trunc('month', day)::date, facility_code, method, brand,
                                  sum(count), sum(amount_yen)
                           FROM payments_daily GROUP BY 1, 2, 3, 4""",
    "payments_day_totals": """SELECT day, method, brand, sum(count), sum(amount_yen)
                              FROM payments_daily GROUP BY 1, 2, 3""",
    "payments_facility_days": """SELECT day, facility_code, sum(count), sum(amount_yen),
                                        coalesce(sum(count) FILTER (WHERE method <> 'cash'), 0),
                                        coalesce(sum(amount_yen) FILTER (WHERE method <> 'cash'), 0)
                                 FROM payments_daily GROUP BY 1, 2""",
    "applications_month_procedure": """
        SELECT month, procedure_code, coalesce(sum(count) FILTER (WHERE channel = 'online'), 0),
               coalesce(sum(count) FILTER (WHERE channel = 'counter'), 0),
               coalesce(sum(count) FILTER (WHERE channel = 'mail'), 0)
        FROM applications_monthly GROUP BY 1, 2""",
    "applications_procedure_totals": """
        SELECT procedure_code, coalesce(sum(count) FILTER (WHERE channel = 'online'), 0),
               coalesce(sum(count) FILTER (WHERE channel = 'counter'), 0),
               coalesce(sum(count) FILTER (WHERE channel = 'mail'), 0)
        FROM applications_monthly GROUP BY 1""",
    "applications_by_procedure": """SELECT procedure_code, channel, sum(count)
                                    FROM applications_monthly GROUP BY 1, 2""",
    "applications_by_month": """SELECT month, channel, sum(count)
                                FROM applications_monthly GROUP BY 1, 2""",
    "turnaround_by_procedure": """SELECT procedure_code, sum(submitted), sum(completed),
                                         sum(closed), sum(certificates_issued)
                                  FROM turnaround_monthly GROUP BY 1""",
    "turnaround_by_month": """SELECT month, sum(submitted), sum(completed), sum(closed),
                                     sum(certificates_issued)
                              FROM turnaround_monthly GROUP BY 1""",
    "turnaround_procedure_histogram": """SELECT procedure_code, bin, sum(count), sum(seconds)
                                         FROM turnaround_histogram GROUP BY 1, 2""",
    "turnaround_month_histogram": """SELECT month, bin, sum(count), sum(seconds)
                                     FROM turnaround_histogram GROUP BY 1, 2""",
}


COUNTED = {
    "turnaround_by_procedure": "procedure_code, submitted, completed, closed, certificates_issued",
    "turnaround_by_month": "month, submitted, completed, closed, certificates_issued",
}
"""The summed columns of roll-ups that also keep percentiles (checked below)."""

PERCENTILES = {
    # table with kept median and p90: its keys, and its histogram
    "turnaround_monthly": (("month", "procedure_code"), "turnaround_histogram"),
    "turnaround_by_procedure": (("procedure_code",), "turnaround_procedure_histogram"),
    "turnaround_by_month": (("month",), "turnaround_month_histogram"),
}


async def test_every_roll_up_is_the_sum_of_the_finest_buckets(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = pools
    rng = random.Random(4)
    events = _mixed_events(rng)
    for i in range(0, len(events), 50):
        with contextlib.suppress(ReversalExceedsCapture):
            await apply(pool, events[i : i + 50])
    for table, query in ROLLUPS.items():
        columns = COUNTED.get(table, "*")
        kept = sorted(tuple(r.values()) for r in await pool.fetch(f"SELECT {columns} FROM {table}"))
        summed = sorted(tuple(r.values()) for r in await pool.fetch(query))
        assert kept == summed, table
        assert kept, f"{table} is empty: the test feeds it nothing"


async def test_a_roll_up_gives_the_figures_of_the_finest_table(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    """Each query reads the smallest level that has its keys and filters; a filter that forces
    the finest level gives the same figures."""
    pool, _ = pools
    await apply(pool, _mixed_events(random.Random(5)))
    everything = store.Period(date(2000, 1, 1), date(2100, 1, 1))
    payment_keys: list[list[store.PaymentKey]] = [
        [],
        ["facility_code"],
        ["method", "brand"],
        ["day"],
    ]
    for pkeys in payment_keys:
        coarse = await store.payments_by(pool, pkeys, store.PaymentFilter())
        fine = await store.payments_by(pool, pkeys, store.PaymentFilter(period=everything))
        assert coarse == fine, pkeys
    # a period with procedures in the keys: applications_monthly, not the all-time roll-up
    application_keys: list[list[store.ApplicationKey]] = [["procedure_code"], ["department"]]
    for akeys in application_keys:
        coarse = await store.applications_by(pool, akeys, store.ApplicationFilter())
        fine = await store.applications_by(pool, akeys, store.ApplicationFilter(period=everything))
        assert coarse == fine, akeys
    turnaround_keys: list[list[store.TurnaroundKey]] = [["procedure_code"], []]
    for tkeys in turnaround_keys:
        coarse = await store.turnaround_by(pool, tkeys, store.ApplicationFilter())
        fine = await store.turnaround_by(
            pool, tkeys, store.ApplicationFilter(period=everything, group=None)
        )
        assert [dict(r) for r in coarse] == [dict(r) for r in fine], tkeys


async def test_the_kept_percentiles_are_those_of_the_bins_after_every_batch(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    """Each batch that gives a key new times has its median and p90 computed again (0012),
    with the interpolation the API uses over bins (store._median_p90)."""
    pool, _ = pools
    events = _mixed_events(random.Random(6))
    for i in range(0, len(events), 40):
        with contextlib.suppress(ReversalExceedsCapture):
            await apply(pool, events[i : i + 40])
        for table, (keys, histogram) in PERCENTILES.items():
            names = ", ".join(keys)
            kept = {
                tuple(r[:-2]): (r["median_seconds"], r["p90_seconds"])
                for r in await pool.fetch(
                    f"SELECT {names}, median_seconds, p90_seconds FROM {table}"
                )
            }
            bins: dict[tuple[Any, ...], tuple[list[int], list[float]]] = {}
            for r in await pool.fetch(
                f"SELECT {names}, count, seconds::float8 / count AS v FROM {histogram} "
                f"ORDER BY {names}, bin"
            ):
                counts, means = bins.setdefault(tuple(r[: len(keys)]), ([], []))
                counts.append(r["count"])
                means.append(r["v"])
            expected = {
                key: store._median_p90(*bins[key]) if key in bins else (None, None) for key in kept
            }
            assert kept == expected, table
    assert any(v != (None, None) for v in kept.values()), "no times: the test feeds none"
