"""`cityhall up` as a test runs it: started on free ports with its own home, ready, stopped
by Ctrl-C with nothing left behind (tests/e2e/test_stack_embedded.py, test_stack_supervised.py).
Leaves NATS_URL and DATABASE_URL out of the environment, so the stack starts its embedded
servers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from cityhall.embedded import free_port
from tests.e2e.helpers import (
    Processes,
    Spawned,
    alive,
    clean_env,
    free_port_base,
    is_ready,
    psutil_process,
    read_logs,
    service_ports,
    wait_until,
)


@dataclass
class Run:
    """One `cityhall up` run and the processes it started."""

    up: Spawned
    home: Path
    urls: dict[str, str]
    nats: list[psutil.Process] = field(default_factory=list)
    postgres: list[psutil.Process] = field(default_factory=list)
    services: list[psutil.Process] = field(default_factory=list)

    def logs(self) -> str:
        return self.up.output() + "\n" + read_logs((self.home / "logs").glob("*.log"))

    def all_pids(self) -> list[psutil.Process]:
        return [*self.nats, *self.postgres, *self.services, *self.up.descendants.values()]


def postmaster(home: Path) -> psutil.Process | None:
    """The postmaster from ``postmaster.pid`` (PostgreSQL runs detached from `cityhall up`)."""
    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        pid = int((home / "postgres" / "postmaster.pid").read_text().splitlines()[0])
        proc = psutil_process(pid)
        if proc is not None and "postgres" in proc.name():
            return proc
    return None


async def start_stack(
    processes: Processes,
    home: Path,
    http: httpx.AsyncClient,
    *up_args: str,
    ready_timeout_s: float = 90,
    **env_values: str,
) -> Run:
    """``up_args``: more of `cityhall up`'s options (``--traces``); ``env_values``: more of its
    environment."""
    base = free_port_base()
    env = clean_env(
        CITYHALL_HOME=str(home),
        CITYHALL_NATS_PORT=str(free_port()),
        CITYHALL_PORT_BASE=str(base),
        **env_values,
    )
    run = Run(
        up=processes.cityhall("up", "up", *up_args, env=env),
        home=home,
        urls={name: f"http://127.0.0.1:{port}" for name, port in service_ports(base).items()},
    )

    async def all_ready() -> bool:
        run.up.record_descendants()
        if not run.postgres and (pm := postmaster(home)) is not None:
            run.postgres.append(pm)
            processes.also_stop(pm, signal.SIGINT)  # fast shutdown if `up` cannot do it
        assert run.up.returncode is None, f"cityhall up exited ({run.up.returncode})\n{run.logs()}"
        return all(await asyncio.gather(*(is_ready(http, u) for u in run.urls.values())))

    await wait_until(all_ready, timeout=ready_timeout_s, interval=0.25, message=run.logs)

    run.nats = run.up.running_descendants("nats-server")
    run.services = run.up.running_descendants("cityhall serve")
    assert len(run.nats) == 1, run.up.cmdlines
    assert len(run.services) == 4, run.up.cmdlines
    assert len(run.postgres) == 1, f"no postmaster.pid under {home}/postgres"
    # The postmaster's own processes (checkpointer, backends, ...) must stop with it.
    run.postgres.extend(run.postgres[0].children(recursive=True))
    print(
        f"up {run.up.pid}: nats {[p.pid for p in run.nats]}, "
        f"postgres {[p.pid for p in run.postgres]}, services {[p.pid for p in run.services]}",
        file=sys.stderr,
    )
    return run


async def stop_stack(run: Run) -> None:
    """Ctrl-C: `cityhall up` exits 0 and leaves no process behind."""
    run.up.record_descendants()
    started = time.monotonic()
    run.up.signal(signal.SIGINT)
    code = await run.up.wait(40)
    print(f"cityhall up stopped in {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert code == 0, run.logs()
    left = [p for p in run.all_pids() if alive(p)]
    assert not left, f"still running after `cityhall up` exited: {left}\n{run.logs()}"


async def applications_by_channel(http: httpx.AsyncClient, run: Run) -> dict[str, int]:
    resp = await http.get(f"{run.urls['reporting']}/kpi/applications/by-channel")
    assert resp.status_code == 200, resp.text
    body: dict[str, int] = resp.json()
    return body
