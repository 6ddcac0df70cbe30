"""`cityhall up` keeps its embedded servers running: the nats-server, or PostgreSQL's
postmaster, killed with SIGKILL is announced on the console (which server, how it ended, that
it is restarted) and started again on the same store and port (socket); every service is ready
again without a restart of its own, and an application submitted afterwards reaches reporting.

The embedded servers are used (NATS_URL and DATABASE_URL are left out, tests/e2e/local_stack.py).
The give-up after too many deaths is tests/unit/test_supervise.py's (it would take half a
minute of back-off here).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.helpers import Processes, is_ready, wait_until
from tests.e2e.local_stack import (
    Run,
    applications_by_channel,
    postmaster,
    start_stack,
    stop_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def console(run: Run) -> str:
    """Everything `cityhall up` printed so far."""
    return run.up.log_path.read_text(errors="replace")


async def printed(run: Run, text: str, timeout: float = 30) -> None:
    async def seen() -> bool:
        assert run.up.returncode is None, f"cityhall up exited\n{run.logs()}"
        return text in console(run)

    await wait_until(seen, timeout=timeout, interval=0.1, message=run.logs)


async def all_ready(http: httpx.AsyncClient, run: Run) -> bool:
    return all(await asyncio.gather(*(is_ready(http, u) for u in run.urls.values())))


async def submit_and_count(http: httpx.AsyncClient, run: Run, total: int) -> None:
    """A counter application through applications, counted by reporting (over NATS)."""
    token = (run.home / "applications" / "staff.token").read_text().strip()
    resp = await http.post(
        f"{run.urls['applications']}/applications",
        json={"procedure_code": "JUMINHYO", "channel": "counter"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 201, resp.text

    async def counted() -> bool:
        return (await applications_by_channel(http, run))["total"] == total

    await wait_until(counted, timeout=30, interval=0.2, message=run.logs)


async def kill_and_recover(
    http: httpx.AsyncClient, run: Run, victim: psutil.Process, server: str
) -> dict[str, float]:
    """SIGKILL ``victim``; the console lines and the services' recovery, with timings."""
    services = sorted(p.pid for p in run.services)
    killed = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    await printed(run, f"{server} died (")
    line = next(x for x in console(run).splitlines() if f"{server} died (" in x)
    assert str(victim.pid) in line, line
    assert "killed by SIGKILL" in line, line
    assert "restart 1 of 5" in line, line
    await printed(run, f"{server} restarted")
    restarted = time.monotonic()
    await wait_until(lambda: all_ready(http, run), timeout=30, interval=0.2, message=run.logs)
    ready = time.monotonic()
    await submit_and_count(http, run, total=2)
    flowed = time.monotonic()
    # the services recovered by themselves: the same processes, none restarted
    assert sorted(p.pid for p in run.up.running_descendants("cityhall serve")) == services
    assert console(run).count(" died (") == 1, console(run)
    timings = {
        "restarted": restarted - killed,
        "ready": ready - killed,
        "flow": flowed - killed,
    }
    print(f"{server} killed: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    back = next(x for x in console(run).splitlines() if f"{server} restarted" in x)
    print(f"{line}\n{back}", file=sys.stderr)
    return timings


async def test_a_killed_nats_server_is_restarted_and_the_services_reconnect(
    processes: Processes, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        run = await start_stack(processes, tmp_path / "home", http)
        await submit_and_count(http, run, total=1)
        (old,) = run.nats
        command = run.up.cmdlines[old.pid]
        await kill_and_recover(http, run, old, "nats-server")
        (new,) = run.up.running_descendants("nats-server")
        assert new.pid != old.pid
        assert run.up.cmdlines[new.pid] == command  # the same configuration: port, store
        await stop_stack(run)


async def test_a_killed_postmaster_is_restarted_and_the_pools_recover(
    processes: Processes, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        run = await start_stack(processes, tmp_path / "home", http)
        await submit_and_count(http, run, total=1)
        old = run.postgres[0]
        await kill_and_recover(http, run, old, "postgres")
        new = postmaster(run.home)
        assert new is not None
        assert new.pid != old.pid
        processes.also_stop(new, signal.SIGINT)  # fast shutdown if `up` cannot do it
        await stop_stack(run)
