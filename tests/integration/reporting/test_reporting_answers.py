"""KPI answers kept per read-model version (services/reporting/answers.py): never stale after a
projection commits, ETag and 304, gzip when asked (Starlette's middleware), on real JetStream
and PostgreSQL."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext

from services.reporting import projections, store
from services.reporting.answers import AnswerCache
from services.reporting.projections import Capture, Submission
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.reporting.events import application, capture
from tests.integration.reporting.test_kpi_projections import feed, settled

AT = datetime(2026, 10, 5, 1, 0, tzinfo=UTC)


async def test_an_answer_is_new_as_soon_as_a_projection_commits(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)
    before = (await reporting.http.get("/kpi/online-usage")).json()
    again = await reporting.http.get("/kpi/online-usage")
    assert again.json() == before
    cache = reporting.ctx.provided(AnswerCache)
    assert cache is not None
    assert cache.stats.hits >= 1

    # a projection batch commits (what the consumer does with the next event's rows) ...
    async with reporting.pool.acquire() as conn, conn.transaction():
        await projections.apply_application_rows(
            conn, [Submission(uuid.uuid4(), "JUMINHYO", "online", AT)]
        )
    # ... and the very next request shows it: no waiting, no expiry
    after = (await reporting.http.get("/kpi/online-usage")).json()
    assert after["total"]["online"] == before["total"]["online"] + 1
    assert after["total"]["total"] == before["total"]["total"] + 1


async def test_a_batch_that_rolls_back_leaves_the_versions_as_they_were(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    families = ("applications", "payments")
    start = await store.projection_versions(reporting.pool, families)

    async with reporting.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await projections.apply_payment_rows(
            conn, [Capture(uuid.uuid4(), "shiminka", "cash", "", 300, AT)]
        )
        await tx.rollback()
    assert await store.projection_versions(reporting.pool, families) == start

    async with reporting.pool.acquire() as conn, conn.transaction():
        await projections.apply_payment_rows(
            conn, [Capture(uuid.uuid4(), "shiminka", "cash", "", 300, AT)]
        )
    applications, payments = await store.projection_versions(reporting.pool, families)
    assert (applications, payments) == (start[0], start[1] + 1)  # one family, one bump


async def test_events_through_the_consumer_change_every_kept_answer(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)
    paths = (
        "/kpi/online-usage",
        "/kpi/online-usage.csv",
        "/kpi/applications/by-channel",
        "/kpi/certificate-turnaround",
        "/kpi/cashless-share",
        "/kpi/cashless-share.csv",
        "/kpi/revenue",
        "/kpi/revenue.csv",
    )
    kept = {p: (await reporting.http.get(p)).text for p in paths}
    open_data = (await reporting.http.get("/open-data/kpi")).json()

    await publish_envelope(js, namespace, application("online", "KOSEKI", "2026-11-03 10:00"))
    await publish_envelope(
        js, namespace, capture("shiminka", "qr", "PayPay", 450, "2026-11-03 10:05")
    )

    async def counted() -> bool:
        pays = (await reporting.http.get("/kpi/cashless-share")).json()
        usage = (await reporting.http.get("/kpi/online-usage")).json()
        return bool(usage["total"]["total"] == 7 and pays["total"]["count"] == 7)

    await wait_for(counted)
    for path in paths:
        if path.startswith("/kpi/certificate-turnaround"):
            continue  # a submission without a step: submitted changes, checked below
        assert (await reporting.http.get(path)).text != kept[path], path
    turnaround = (await reporting.http.get("/kpi/certificate-turnaround")).json()
    assert turnaround["total"]["submitted"] == 7
    new_open_data = (await reporting.http.get("/open-data/kpi")).json()
    assert sum(r["total"] for r in new_open_data["online_usage"]) == 7
    assert sum(r["total"] for r in open_data["online_usage"]) == 6
    assert sum(r["count"] for r in new_open_data["cashless_share"]) == 7


async def test_if_none_match_is_answered_304_until_the_figures_change(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)
    first = await reporting.http.get("/kpi/cashless-share")
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    assert first.headers["cache-control"] == "no-cache"

    same = await reporting.http.get("/kpi/cashless-share", headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    strong = await reporting.http.get(  # the strong form of the same tag: weak comparison
        "/kpi/cashless-share", headers={"If-None-Match": f'"other", {etag.removeprefix("W/")}'}
    )
    assert strong.status_code == 304
    other = await reporting.http.get("/kpi/cashless-share", headers={"If-None-Match": '"x"'})
    assert other.status_code == 200
    assert other.json() == first.json()
    filtered = await reporting.http.get(
        "/kpi/cashless-share", params={"facility": "shiminka"}, headers={"If-None-Match": etag}
    )
    assert filtered.status_code == 200  # another answer, another tag

    await publish_envelope(
        js, namespace, capture("shiminka", "cash", None, 200, "2026-11-04 10:00")
    )

    async def changed() -> bool:
        resp = await reporting.http.get("/kpi/cashless-share", headers={"If-None-Match": etag})
        return resp.status_code == 200

    await wait_for(changed)
    new = await reporting.http.get("/kpi/cashless-share", headers={"If-None-Match": etag})
    assert new.status_code == 200
    assert new.headers["etag"] != etag
    assert new.json()["total"]["count"] == first.json()["total"]["count"] + 1


async def test_gzip_only_when_the_client_accepts_it(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)
    plain = await reporting.http.get("/open-data/kpi", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"

    async with reporting.http.stream(
        "GET", "/open-data/kpi", headers={"Accept-Encoding": "gzip"}
    ) as zipped:
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) == len(raw) < len(plain.content)
    assert gzip.decompress(raw) == plain.content
    # one weak tag for the figures, whichever way they travel; either revalidates
    assert zipped.headers["etag"] == plain.headers["etag"]
    assert zipped.headers["etag"].startswith('W/"')
    assert zipped.headers["vary"] == "Accept-Encoding"
    again = await reporting.http.get(
        "/open-data/kpi",
        headers={"Accept-Encoding": "gzip", "If-None-Match": plain.headers["etag"]},
    )
    assert again.status_code == 304
    assert again.content == b""

    small = await reporting.http.get(
        "/kpi/applications/by-channel", headers={"Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in small.headers  # one packet either way


async def test_metrics_keep_their_kpis_but_ask_for_the_lag_each_time(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    await feed(js, namespace)
    await settled(reporting)
    first = (await reporting.http.get("/metrics")).text
    assert first.endswith("# EOF\n")
    assert first.count("# EOF") == 1
    assert 'cityhall_applications{channel="online"} 3.0' in first

    await publish_envelope(js, namespace, application("online", "KOSEKI", "2026-11-03 10:00"))

    async def counted() -> bool:
        text = (await reporting.http.get("/metrics")).text
        return 'cityhall_applications{channel="online"} 4.0' in text

    await wait_for(counted)
    text = (await reporting.http.get("/metrics")).text
    assert 'cityhall_projection_events_behind{consumer="reporting_applications"} 0.0' in text
