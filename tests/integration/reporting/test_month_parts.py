"""Versions per month of a read-model (migration 0013) and the open data built month by month
from them (answers.MonthParts), on real PostgreSQL: every write to a month gives it a new
version, whoever writes; the answer is byte for byte the one computed from nothing, and only
the months whose rows changed are read again."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from services.reporting import answers, domain, projections, rebuild, store
from services.reporting.answers import AnswerCache, MonthParts
from services.reporting.api import open_data, revenue, usage
from services.reporting.api.answering import json_answer
from services.reporting.projections import (
    Capture,
    Procedure,
    Reversal,
    Settlement,
    Submission,
)
from services.runtime.settings import ServiceSettings

TABLE = "applications_month_procedure"
OCTOBER, NOVEMBER = date(2026, 10, 1), date(2026, 11, 1)
IN_OCTOBER = datetime(2026, 10, 5, 1, 0, tzinfo=UTC)
IN_NOVEMBER = datetime(2026, 11, 5, 1, 0, tzinfo=UTC)
EVERYTHING = store.Period()


async def submit(pool: Any, *rows: tuple[str, str, datetime]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await projections.apply_application_rows(
            conn, [Submission(uuid.uuid4(), code, channel, at) for code, channel, at in rows]
        )


async def versions(pool: Any) -> dict[date, int]:
    return await store.month_versions(pool, [TABLE], EVERYTHING)


async def test_every_write_to_a_month_gives_that_month_and_only_it_a_new_version(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    pool = reporting.pool
    assert await versions(pool) == {}

    await submit(pool, ("JUMINHYO", "online", IN_OCTOBER), ("KOSEKI", "counter", IN_NOVEMBER))
    first = await versions(pool)
    assert set(first) == {OCTOBER, NOVEMBER}

    await submit(pool, ("JUMINHYO", "mail", IN_NOVEMBER))  # an update of November's rows
    second = await versions(pool)
    assert second[OCTOBER] == first[OCTOBER]
    assert second[NOVEMBER] > first[NOVEMBER]

    async with pool.acquire() as conn:  # rolled back: nothing moves
        tx = conn.transaction()
        await tx.start()
        await projections.apply_application_rows(
            conn, [Submission(uuid.uuid4(), "JUMINHYO", "online", IN_OCTOBER)]
        )
        await tx.rollback()
    assert await versions(pool) == second

    # a writer whose search_path is not the schema (an operator's psql, a benchmark) too
    schema = reporting.ctx.settings.schema_name
    conn = await asyncpg.connect(reporting.ctx.settings.dsn)
    try:
        await conn.execute(f'DELETE FROM "{schema}".{TABLE} WHERE month = $1', OCTOBER)
    finally:
        await conn.close()
    third = await versions(pool)
    assert third[OCTOBER] > second[OCTOBER]
    assert third[NOVEMBER] == second[NOVEMBER]

    await pool.execute(f"TRUNCATE {TABLE}")
    fourth = await versions(pool)
    assert all(fourth[m] > third[m] for m in third)


def chunks_json(chunks: list[answers.Chunk]) -> bytes:
    """An open data list as the answer joins its months' chunks."""
    return b"[" + b",".join(c.data for c in chunks) + b"]"


async def kept_then_fresh(
    ctx: Any, build: Callable[[Any, store.Period], Awaitable[list[answers.Chunk]]], period: Any
) -> tuple[bytes, bytes]:
    """An open data list built with the month parts kept so far, then with none kept (every
    month read again)."""
    kept = chunks_json(await build(ctx, period))
    ctx._provided[MonthParts] = MonthParts(2**20)
    return kept, chunks_json(await build(ctx, period))


def reference_usage(rows: list[Any]) -> bytes:
    """Open data's online usage encoded as one list, as the API did before it had parts."""
    return orjson.dumps(
        [
            {
                "month": r["month"].isoformat()[:7],
                "procedure_code": r["procedure_code"],
                "online": r["online"],
                "total": r["total"],
                "online_share": domain.share(r["online"], r["total"]),
            }
            for r in rows
        ]
    )


async def test_open_data_reads_again_only_the_months_that_changed_and_matches_a_fresh_build(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    pool, ctx = reporting.pool, reporting.ctx
    await submit(
        pool,
        ("JUMINHYO", "online", IN_OCTOBER),
        ("KOSEKI", "counter", IN_OCTOBER),
        ("JUMINHYO", "mail", IN_NOVEMBER),
    )
    first = (await reporting.http.get("/open-data/kpi")).json()
    parts = ctx.provided(MonthParts)
    assert parts is not None
    assert len(parts) == 2
    hits, misses = parts.stats.hits, parts.stats.misses

    await submit(pool, ("JUMINHYO", "online", IN_NOVEMBER), ("INKAN", "online", IN_NOVEMBER))
    second = (await reporting.http.get("/open-data/kpi")).json()
    assert (parts.stats.hits, parts.stats.misses) == (hits + 1, misses + 1)  # October kept
    assert second["online_usage"][:2] == first["online_usage"][:2]
    november = {r["procedure_code"]: r for r in second["online_usage"] if r["month"] == "2026-11"}
    assert november["JUMINHYO"]["online"] == 1
    assert november["JUMINHYO"]["total"] == 2
    assert november["INKAN"]["total"] == 1

    for period in (EVERYTHING, store.Period(NOVEMBER, date(2026, 12, 1))):
        kept, fresh = await kept_then_fresh(ctx, open_data.open_usage, period)
        rows = await store.applications_by(
            pool, ["month", "procedure_code"], store.ApplicationFilter(period=period)
        )
        assert kept == fresh == reference_usage(rows)


async def test_a_rebuild_gives_every_month_it_replaces_a_new_version(
    start_service: Any,
) -> None:
    """The swap truncates the live read-models and copies the shadow's rows in: the months
    the shadow has, and the ones it lacks, all move (here the shadow is empty: no events)."""
    reporting = await start_service("reporting")
    await submit(reporting.pool, ("JUMINHYO", "online", IN_OCTOBER))
    before = await versions(reporting.pool)
    settings: ServiceSettings = reporting.ctx.settings
    await rebuild.rebuild(settings)
    after = await versions(reporting.pool)
    assert after[OCTOBER] > before[OCTOBER]
    assert await reporting.pool.fetchval(f"SELECT count(*) FROM {TABLE}") == 0


async def pay(pool: Any, *rows: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await projections.apply_payment_rows(conn, list(rows))


def three_captures(first: uuid.UUID) -> list[Capture]:
    """Two facilities, two months: ``first`` (a QR payment at shiminka in October), a cash
    payment at kaikan in October, a credit card at shiminka in November."""
    return [
        Capture(first, "shiminka", "qr", "PayPay", 300, IN_OCTOBER),
        Capture(uuid.uuid4(), "kaikan", "cash", "", 750, IN_OCTOBER),
        Capture(uuid.uuid4(), "shiminka", "credit", "Visa", 450, IN_NOVEMBER),
    ]


async def test_revenue_reads_again_only_the_months_that_changed_and_matches_a_fresh_build(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    pool, ctx = reporting.pool, reporting.ctx
    captured = uuid.uuid4()
    await pay(
        pool,
        *three_captures(captured),
        Settlement("b-1", "shiminka", date(2026, 10, 5), True, 300, 9, IN_NOVEMBER),
    )
    await reporting.http.get("/kpi/revenue")
    parts = ctx.provided(MonthParts)
    assert parts is not None
    hits, misses = parts.stats.hits, parts.stats.misses

    await pay(pool, Capture(uuid.uuid4(), "shiminka", "qr", "d払い", 200, IN_NOVEMBER))
    second = (await reporting.http.get("/kpi/revenue")).json()
    assert (parts.stats.hits, parts.stats.misses) == (hits + 1, misses + 1)  # October kept
    assert second["total_gross_yen"] == 300 + 750 + 450 + 200
    assert second["total_fee_yen"] == 9

    # a settlement of an October day, or a refund of an October capture, changes October
    before = await store.month_versions(pool, revenue.REVENUE_TABLES, EVERYTHING)
    await pay(pool, Settlement("b-2", "kaikan", date(2026, 10, 5), False, None, None, IN_NOVEMBER))
    after = await store.month_versions(pool, revenue.REVENUE_TABLES, EVERYTHING)
    assert after[OCTOBER] > before[OCTOBER]
    assert after[NOVEMBER] == before[NOVEMBER]
    await pay(pool, Reversal("r-1", captured, "refund", 100, IN_NOVEMBER))

    filters = (
        store.PaymentFilter(),
        store.PaymentFilter(facility_code="shiminka"),
        store.PaymentFilter(period=store.Period(NOVEMBER, date(2026, 12, 1))),
    )
    for f in filters:
        kept = (await revenue.revenue_by_months(ctx, f)).body
        ctx._provided[MonthParts] = MonthParts(2**20)  # nothing kept: every month read
        fresh = (await revenue.revenue_by_months(ctx, f)).body
        assert kept == fresh == json_answer(await revenue.revenue_rows(ctx, f)).body


async def test_open_datas_cashless_months_match_the_monthly_roll_up_kept_or_fresh(
    start_service: Any,
) -> None:
    """Open data's cashless share is built month by month from the facility-days (their
    months are versioned); it must say what the monthly roll-up by method says."""
    reporting = await start_service("reporting")
    pool, ctx = reporting.pool, reporting.ctx
    captured = uuid.uuid4()
    await pay(pool, *three_captures(captured))
    first = (await reporting.http.get("/open-data/kpi")).json()
    assert [(r["month"], r["facility_code"]) for r in first["cashless_share"]] == [
        ("2026-10", "kaikan"),
        ("2026-10", "shiminka"),
        ("2026-11", "shiminka"),
    ]
    parts = ctx.provided(MonthParts)
    assert parts is not None
    hits, misses = parts.stats.hits, parts.stats.misses

    await pay(pool, Capture(uuid.uuid4(), "kaikan", "cash", "", 500, IN_NOVEMBER))
    second = (await reporting.http.get("/open-data/kpi")).json()
    # October's cashless part kept, November's built again (no applications: no usage months)
    assert (parts.stats.hits, parts.stats.misses) == (hits + 1, misses + 1)
    assert second["cashless_share"][:2] == first["cashless_share"][:2]
    await pay(pool, Reversal("r-1", captured, "refund", 100, IN_NOVEMBER))  # changes October

    for period in (EVERYTHING, store.Period(NOVEMBER, date(2026, 12, 1))):
        kept, fresh = await kept_then_fresh(ctx, open_data.open_cashless, period)
        rows = await store.payments_by(
            pool, ["month", "facility_code"], store.PaymentFilter(period=period)
        )
        reference = [
            {
                "month": r["month"].isoformat()[:7],
                "facility_code": r["facility_code"],
                "count": r["count"],
                "cashless_count": r["cashless_count"],
                "amount_yen": r["amount_yen"],
                "cashless_amount_yen": r["cashless_amount_yen"],
                "cashless_share_by_count": domain.share(r["cashless_count"], r["count"]),
                "cashless_share_by_amount": domain.share(r["cashless_amount_yen"], r["amount_yen"]),
            }
            for r in rows
        ]
        assert kept == fresh == orjson.dumps(reference)
    everything = orjson.loads(chunks_json(await open_data.open_cashless(ctx, EVERYTHING)))
    assert everything[1] == {
        "month": "2026-10",
        "facility_code": "shiminka",
        "count": 1,
        "cashless_count": 1,
        "amount_yen": 200,
        "cashless_amount_yen": 200,
        "cashless_share_by_count": 1.0,
        "cashless_share_by_amount": 1.0,
    }


async def test_an_answer_for_past_months_is_kept_while_batches_change_only_other_months(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    pool, http = reporting.pool, reporting.http
    await submit(pool, ("JUMINHYO", "online", IN_OCTOBER), ("KOSEKI", "counter", IN_NOVEMBER))
    october = {"from": "2026-10", "to": "2026-10"}
    paths = (
        "/kpi/online-usage",
        "/kpi/online-usage.csv",
        "/kpi/certificate-turnaround",
        "/kpi/certificate-turnaround.csv",
    )

    async def answers() -> dict[str, bytes]:
        return {p: (await http.get(p, params=october)).content for p in paths}

    first = await answers()
    cache = reporting.ctx.provided(AnswerCache)
    assert cache is not None
    misses = cache.stats.misses

    # November changes: October's answers are served as they were kept, not built again
    await submit(pool, ("JUMINHYO", "online", IN_NOVEMBER), ("INKAN", "mail", IN_NOVEMBER))
    assert await answers() == first
    assert cache.stats.misses == misses

    # October changes: every one is built again, with the new submission
    await submit(pool, ("JUMINHYO", "mail", IN_OCTOBER))
    second = await answers()
    assert cache.stats.misses == misses + len(paths)
    assert all(second[p] != first[p] for p in paths)
    usage = orjson.loads(second["/kpi/online-usage"])
    assert usage["total"]["total"] == 2

    # the catalog changes (a department, a group): every one is built again
    async with pool.acquire() as conn, conn.transaction():
        await projections.apply_application_rows(
            conn,
            [Procedure("JUMINHYO", "住民票の写し", "市民部", 1, None, None, False, IN_NOVEMBER)],
        )
    await answers()
    assert cache.stats.misses == misses + 2 * len(paths)


async def test_a_groups_usage_by_month_is_summed_again_for_changed_months_and_catalogs(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    pool, ctx = reporting.pool, reporting.ctx
    catalog = [
        Procedure("JUMINHYO", "住民票の写し", "市民部", 1, None, None, False, IN_OCTOBER),
        Procedure("KOSEKI", "戸籍謄本", "市民部", 2, None, None, False, IN_OCTOBER),
        Procedure("INKAN", "印鑑登録証明書", "市民部", 2, None, None, False, IN_OCTOBER),
    ]
    async with pool.acquire() as conn, conn.transaction():
        await projections.apply_application_rows(conn, catalog)
    await submit(
        pool,
        ("JUMINHYO", "online", IN_OCTOBER),
        ("KOSEKI", "counter", IN_OCTOBER),
        ("INKAN", "online", IN_NOVEMBER),
    )
    filters = (
        store.ApplicationFilter(group=2),
        store.ApplicationFilter(group=1),
        store.ApplicationFilter(department="市民部", period=store.Period(NOVEMBER, None)),
    )

    async def check() -> list[Any]:
        seen = []
        for f in filters:
            kept = [tuple(r) for r in await usage.usage_by_month(ctx, f)]
            reference = [tuple(r) for r in await store.applications_by(pool, ["month"], f)]
            assert kept == reference, f
            seen.append(kept)
        return seen

    first = await check()
    assert [len(rows) for rows in first] == [2, 1, 1]
    await submit(pool, ("KOSEKI", "mail", IN_NOVEMBER))  # November changes
    second = await check()
    assert second[0][0] == first[0][0]  # October's sums as they were
    assert second[0][1] != first[0][1]
    async with pool.acquire() as conn, conn.transaction():  # JUMINHYO joins group 2
        await projections.apply_application_rows(
            conn, [catalog[0]._replace(procedure_group=2, as_of=IN_NOVEMBER)]
        )
    third = await check()
    assert third[1] == []
    assert third[0][0] != second[0][0]
