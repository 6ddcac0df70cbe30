"""A service's stop always finishes: a stuck step is logged and passed, never a hung process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import pytest

from services.runtime import service


async def test_stop_finishes_past_a_job_that_ignores_cancel_and_a_connection_never_released(
    start_service: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service, "STOP_STEP_TIMEOUT_S", 0.5)
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
        with caplog.at_level(logging.ERROR, logger="services.runtime.service"):
            await asyncio.wait_for(runtime.stop(), timeout=60)
    finally:
        release.set()  # else the job outlives the test (and its event loop's shutdown)
    await job

    said = [(r.getMessage(), getattr(r, "job", getattr(r, "step", None))) for r in caplog.records]
    assert ("background job did not stop when cancelled", "stubborn-job") in said
    assert ("shutdown step did not finish in time", "database pool") in said
    with pytest.raises(asyncpg.InterfaceError):  # terminated with the pool
        await held.fetchval("SELECT 1")
