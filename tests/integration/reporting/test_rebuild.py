"""`cityhall reporting rebuild` and the projection lag, on real JetStream and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from services.reporting.lag import projection_lag
from services.reporting.rebuild import RebuildError, rebuild, rebuild_lock, shadow_schema
from services.reporting.subscribers import BINDINGS
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.reporting.events import application
from tests.integration.reporting.test_kpi_projections import feed, settled

KPI_PATHS = (
    "/kpi/online-usage",
    "/kpi/cashless-share",
    "/kpi/revenue",
    "/kpi/applications/by-channel",
    "/kpi/online-usage.csv",
    "/kpi/cashless-share.csv",
    "/kpi/revenue.csv",
)


async def figures(reporting: Any) -> dict[str, str]:
    return {path: (await reporting.http.get(path)).text for path in KPI_PATHS}


async def test_a_rebuild_gives_exactly_the_live_figures(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)
    live = await figures(reporting)
    # A projection bug stands in here: the live read-models drift from the event log (in a
    # projection's transaction, which bumps the versions the API keeps its answers by).
    async with reporting.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE applications_monthly SET count = count + 7")
        await conn.execute("DELETE FROM payments_daily WHERE method = 'cash'")
        await conn.execute("UPDATE projection_versions SET version = version + 1")
    assert await figures(reporting) != live

    report = await rebuild(reporting.ctx.settings)

    assert report.applied == {"reporting_applications": 6, "reporting_payments": 6}
    assert report.failed == []
    assert await figures(reporting) == live
    shadow = await reporting.pool.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
        shadow_schema(reporting.ctx.settings.schema_name),
    )
    assert shadow == 0


async def test_events_arriving_during_a_rebuild_are_counted_once(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)

    async def keep_applying() -> None:
        for i in range(30):
            await publish_envelope(
                js, namespace, application("online", "ZEIMU", "2026-12-01 10:00")
            )
            if i % 5 == 0:
                await asyncio.sleep(0.01)

    await asyncio.gather(rebuild(reporting.ctx.settings), keep_applying())

    async def all_in() -> Any:
        body = (await reporting.http.get("/kpi/online-usage", params={"procedure": "ZEIMU"})).json()
        return body if body["total"]["total"] >= 30 else None

    body = await wait_for(all_in)
    await asyncio.sleep(0.3)  # a double count would show up by now
    body = (await reporting.http.get("/kpi/online-usage", params={"procedure": "ZEIMU"})).json()
    assert body["total"]["online"] == 30
    assert body["total"]["total"] == 30
    whole = (await reporting.http.get("/kpi/applications/by-channel")).json()
    assert whole["total"] == 36
    assert await reporting.pool.fetchval("SELECT count(*) FROM application_facts") == 36


async def test_projection_lag_counts_events_not_yet_applied(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await publish_envelope(js, namespace, application("online", "JUMINHYO", "2026-10-01 09:00"))

    async def caught_up() -> Any:
        lags = (await reporting.http.get("/projection/lag")).json()
        return lags if lags[0]["events_behind"] == 0 and lags[0]["last_applied_seq"] == 1 else None

    lags = await wait_for(caught_up)
    assert lags[0] == {
        "consumer": "reporting_applications",
        "stream": f"{namespace.upper()}_APPLICATIONS",
        "stream_last_seq": 1,
        "last_applied_seq": 1,
        "events_behind": 0,
        "seconds_behind": 0.0,
    }
    await reporting.runtime.stop()  # reporting is down; the city keeps applying
    for _ in range(3):
        await publish_envelope(
            js, namespace, application("counter", "JUMINHYO", "2026-10-02 09:00")
        )
    await asyncio.sleep(0.2)

    [apps, _payments] = await projection_lag(js, namespace, BINDINGS)
    assert apps.events_behind == 3
    assert apps.stream_last_seq == 4
    assert apps.last_applied_seq == 1
    assert apps.seconds_behind >= 0.2


async def test_a_second_rebuild_while_one_runs_is_refused(
    start_service: Any, database_url: str
) -> None:
    reporting = await start_service("reporting")
    settings = reporting.ctx.settings
    holder = await asyncpg.connect(database_url)  # stands in for a rebuild in progress
    try:
        await holder.execute(
            "SELECT pg_advisory_lock(hashtext($1))", rebuild_lock(settings.schema_name)
        )
        with pytest.raises(RebuildError, match="another rebuild"):
            await rebuild(settings)
    finally:
        await holder.close()
    report = await rebuild(settings)  # once the first has finished, it runs
    assert report.failed == []
