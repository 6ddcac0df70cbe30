"""The runtime's own costs and limits: a stop always finishes (a stuck step is logged and
passed, never a hung process); a consumer takes its batches without a thread hop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import anyio.to_thread
import asyncpg
import pytest
from nats.js import JetStreamContext

from services.runtime import lifecycle
from tests.integration.helpers import publish_envelope, submitted, wait_for


async def test_stop_finishes_past_a_job_that_ignores_cancel_and_a_connection_never_released(
    start_service: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lifecycle, "STOP_STEP_TIMEOUT_S", 0.5)
    running = await start_service("notifications")
    runtime = running.runtime
    release = asyncio.Event()

    async def stubborn() -> None:  # swallows its cancellation, as a buggy job could
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    job = asyncio.create_task(stubborn(), name="stubborn-job")
    runtime._jobs.append(job)
    held = await running.pool.acquire()  # never released: pool.close() alone would wait for ever

    try:
        with caplog.at_level(logging.ERROR, logger="services.runtime.lifecycle"):
            await asyncio.wait_for(runtime.stop(), timeout=60)
    finally:
        release.set()  # else the job outlives the test (and its event loop's shutdown)
    await job

    said = [(r.getMessage(), getattr(r, "job", getattr(r, "step", None))) for r in caplog.records]
    assert ("background job did not stop when cancelled", "stubborn-job") in said
    assert ("shutdown step did not finish in time", "database pool") in said
    with pytest.raises(asyncpg.InterfaceError):  # terminated with the pool
        await held.fetchval("SELECT 1")


async def test_a_consumer_takes_its_batches_without_a_thread_hop(
    start_service: Any, js: JetStreamContext, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastStream resolved a Context("message") parameter with a sync call in a worker thread:
    # one hop per batch on the consumer's critical path. The batch now comes as the body.
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__qualname__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    reporting = await start_service("reporting")
    events = [submitted() for _ in range(20)]
    for env in events:
        await publish_envelope(js, namespace, env)

    async def counted_all() -> bool:
        n = await reporting.pool.fetchval("SELECT count(*) FROM application_facts")
        return bool(n == len(events))

    await wait_for(counted_all)
    assert hops == []


async def test_a_service_sets_its_own_postgresql_session_settings(start_service: Any) -> None:
    # reporting's optional filters need plans made with their values (docs/reporting.md)
    reporting = await start_service("reporting")
    payments = await start_service("payments")
    assert await reporting.pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    assert await payments.pool.fetchval("SHOW plan_cache_mode") == "auto"
    assert await reporting.pool.fetchval("SHOW application_name") == "reporting"
