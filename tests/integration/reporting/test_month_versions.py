"""Versions per month of a read-model (migration 0013), on real PostgreSQL: every write to a
month gives it a new version, whoever writes; an answer for a period is kept while other
months change and built again when its own months or the catalog change; and the answers
that list a period month by month (open data, revenue, a group's usage) say what the rows
say, whichever months changed last."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from services.reporting import projections, rebuild
from services.reporting.answers import AnswerCache
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


async def submit(pool: Any, *rows: tuple[str, str, datetime]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await projections.apply_application_rows(
            conn, [Submission(uuid.uuid4(), code, channel, at) for code, channel, at in rows]
        )


async def versions(pool: Any) -> dict[date, int]:
    """The version of each month of the usage table, as migration 0013's triggers keep them."""
    rows = await pool.fetch(
        "SELECT month, version FROM read_model_months WHERE table_name = $1", TABLE
    )
    return {r["month"]: r["version"] for r in rows}


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


async def test_open_data_lists_every_month_as_its_rows_are_now(start_service: Any) -> None:
    reporting = await start_service("reporting")
    pool, http = reporting.pool, reporting.http
    captured = uuid.uuid4()
    await submit(
        pool,
        ("JUMINHYO", "online", IN_OCTOBER),
        ("KOSEKI", "counter", IN_OCTOBER),
        ("JUMINHYO", "mail", IN_NOVEMBER),
    )
    await pay(pool, *three_captures(captured))
    first = (await http.get("/open-data/kpi")).json()

    # November changes, then October (a refund of an October capture)
    await submit(pool, ("JUMINHYO", "online", IN_NOVEMBER), ("INKAN", "online", IN_NOVEMBER))
    await pay(pool, Capture(uuid.uuid4(), "kaikan", "cash", "", 500, IN_NOVEMBER))
    await pay(pool, Reversal("r-1", captured, "refund", 100, IN_NOVEMBER))
    second = (await http.get("/open-data/kpi")).json()

    assert second["online_usage"][:2] == first["online_usage"][:2]  # October's usage as it was
    assert [
        (r["month"], r["procedure_code"], r["online"], r["total"]) for r in second["online_usage"]
    ] == [
        ("2026-10", "JUMINHYO", 1, 1),
        ("2026-10", "KOSEKI", 0, 1),
        ("2026-11", "INKAN", 1, 1),
        ("2026-11", "JUMINHYO", 1, 2),
    ]
    assert second["online_usage"][3]["online_share"] == 0.5
    assert second["cashless_share"] == [
        {
            "month": "2026-10",
            "facility_code": "kaikan",
            "count": 1,
            "cashless_count": 0,
            "amount_yen": 750,
            "cashless_amount_yen": 0,
            "cashless_share_by_count": 0.0,
            "cashless_share_by_amount": 0.0,
        },
        {  # the October QR payment, 100 of its 300 yen refunded
            "month": "2026-10",
            "facility_code": "shiminka",
            "count": 1,
            "cashless_count": 1,
            "amount_yen": 200,
            "cashless_amount_yen": 200,
            "cashless_share_by_count": 1.0,
            "cashless_share_by_amount": 1.0,
        },
        {
            "month": "2026-11",
            "facility_code": "kaikan",
            "count": 1,
            "cashless_count": 0,
            "amount_yen": 500,
            "cashless_amount_yen": 0,
            "cashless_share_by_count": 0.0,
            "cashless_share_by_amount": 0.0,
        },
        {
            "month": "2026-11",
            "facility_code": "shiminka",
            "count": 1,
            "cashless_count": 1,
            "amount_yen": 450,
            "cashless_amount_yen": 450,
            "cashless_share_by_count": 1.0,
            "cashless_share_by_amount": 1.0,
        },
    ]
    november = (await http.get("/open-data/kpi", params={"from": "2026-11"})).json()
    assert [r["month"] for r in november["online_usage"]] == ["2026-11", "2026-11"]
    assert [r["facility_code"] for r in november["cashless_share"]] == ["kaikan", "shiminka"]


async def test_revenue_follows_settlements_and_refunds_of_any_month(start_service: Any) -> None:
    reporting = await start_service("reporting")
    pool, http = reporting.pool, reporting.http
    captured = uuid.uuid4()
    await pay(
        pool,
        *three_captures(captured),
        Settlement("b-1", "shiminka", date(2026, 10, 5), True, 300, 9, IN_NOVEMBER),
    )
    first = (await http.get("/kpi/revenue")).json()
    assert first["total_gross_yen"] == 300 + 750 + 450
    assert first["total_fee_yen"] == 9

    await pay(pool, Capture(uuid.uuid4(), "shiminka", "qr", "d払い", 200, IN_NOVEMBER))
    await pay(pool, Settlement("b-2", "kaikan", date(2026, 10, 5), False, None, None, IN_NOVEMBER))
    await pay(pool, Reversal("r-1", captured, "refund", 100, IN_NOVEMBER))
    body = (await http.get("/kpi/revenue")).json()
    assert body["total_gross_yen"] == 300 + 750 + 450 + 200 - 100
    assert body["total_fee_yen"] == 9
    assert body["total_net_yen"] == body["total_gross_yen"] - 9
    days = {(d["facility_code"], d["day"]): d for d in body["days"]}
    assert [key for key in days] == [  # by facility, then day
        ("kaikan", "2026-10-05"),
        ("shiminka", "2026-10-05"),
        ("shiminka", "2026-11-05"),
    ]
    assert days["kaikan", "2026-10-05"]["reconciled"] is False
    assert days["shiminka", "2026-10-05"] == {
        "facility_code": "shiminka",
        "day": "2026-10-05",
        "count": 1,
        "gross_yen": 200,
        "fee_yen": 9,
        "net_yen": 191,
        "reconciled": True,
    }
    assert days["shiminka", "2026-11-05"]["gross_yen"] == 650
    assert days["shiminka", "2026-11-05"]["reconciled"] is None
    shiminka = (await http.get("/kpi/revenue", params={"facility": "shiminka"})).json()
    assert shiminka["total_gross_yen"] == 200 + 650


async def test_a_groups_usage_by_month_follows_its_months_and_the_catalog(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    pool, http = reporting.pool, reporting.http
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

    async def by_month(**params: str) -> list[tuple[str, int, int]]:
        body = (await http.get("/kpi/online-usage", params=params)).json()
        return [(m["month"], m["online"], m["total"]) for m in body["by_month"]]

    assert await by_month(group="2") == [("2026-10", 0, 1), ("2026-11", 1, 1)]
    assert await by_month(group="1") == [("2026-10", 1, 1)]
    assert await by_month(department="市民部", **{"from": "2026-11"}) == [("2026-11", 1, 1)]

    await submit(pool, ("KOSEKI", "mail", IN_NOVEMBER))  # November changes
    assert await by_month(group="2") == [("2026-10", 0, 1), ("2026-11", 1, 2)]
    async with pool.acquire() as conn, conn.transaction():  # JUMINHYO joins group 2
        await projections.apply_application_rows(
            conn, [catalog[0]._replace(procedure_group=2, as_of=IN_NOVEMBER)]
        )
    assert await by_month(group="2") == [("2026-10", 1, 2), ("2026-11", 1, 2)]
    assert await by_month(group="1") == []
