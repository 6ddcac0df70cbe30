"""A service's outbox relay in a process of its own (`cityhall relay`): the service's processes
run with OUTBOX_RELAY=false and only write their outbox; the relay publishes it."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import JetStreamContext

from services.runtime.outbox import add_events
from tests.integration.helpers import application_stream_ids, submitted, wait_for


async def test_a_service_without_its_relay_keeps_its_events_until_a_relay_process_sends_them(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    service = await start_service("applications", outbox_relay=False)
    assert service.ctx.relay is None
    events = [submitted() for _ in range(12)]
    async with service.ctx.pool.acquire() as conn, conn.transaction():
        await add_events(conn, events)
    await asyncio.sleep(1.0)  # five of the tests' relay poll intervals: nothing publishes
    assert await application_stream_ids(js, namespace) == []
    ready = await service.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["outbox_pending"] == 12  # the backlog shows where it waits

    relay = await start_service("applications", role="relay")
    await wait_for(
        lambda: _published(js, namespace, [e.id for e in events]), timeout=15.0, interval=0.1
    )
    assert relay.ctx.consumers == []  # it consumes nothing
    assert (await relay.http.get("/applications")).status_code == 404  # and serves no API
    ready = (await relay.http.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["outbox_pending"] == 0


async def _published(js: JetStreamContext, namespace: str, ids: list[str]) -> bool:
    return await application_stream_ids(js, namespace) == ids
