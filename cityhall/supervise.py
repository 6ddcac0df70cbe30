"""What `cityhall up` does when something it started dies: say so, start it again.

One shape for everything it watches, services and servers alike: a ``Target`` (alive? how did
it end? start it again) and a ``RestartPolicy`` (back-off, and for the servers a limit). The
``Supervisor`` polls the targets; a dead one is announced on the console with how it ended and
started again after its back-off; one that dies more often than its policy allows stops the
stack (``GaveUp``) instead of looping for ever.

The embedded servers are started again exactly where they were: nats-server on the same port,
configuration and JetStream store; PostgreSQL on the same data directory and unix socket. The
services reconnect by themselves (nats-py reconnects for ever; asyncpg's pool replaces closed
connections), so they are not restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.markup import escape

from cityhall.embedded import EmbeddedNats, EmbeddedPostgres


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float
    """Wait before the first restart; doubled for each further one inside ``window_s``."""
    max_delay_s: float = 30.0
    limit: int | None = None
    """Restarts allowed inside ``window_s``; one death more and the stack stops."""
    window_s: float = 600.0
    """Restarts older than this are forgotten: the back-off starts again from the first delay."""

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1)))


SERVICE_RESTARTS = RestartPolicy(first_delay_s=2.0)
"""A service: 2, 4, 8, 16, then every 30 s, for as long as it takes (its log says why)."""
SERVER_RESTARTS = RestartPolicy(first_delay_s=1.0, max_delay_s=16.0, limit=5, window_s=600.0)
"""An embedded server: 1, 2, 4, 8, 16 s; a sixth death within 10 minutes stops the stack."""


class Target(Protocol):
    """Something `cityhall up` started and keeps running."""

    @property
    def name(self) -> str: ...

    @property
    def where(self) -> str:
        """What a restart keeps (data directory, port), for the console line."""
        ...

    @property
    def log_path(self) -> Path: ...

    def alive(self) -> bool: ...

    def ended(self) -> str:
        """How it ended (pid, exit code or signal), once ``alive()`` said it had."""
        ...

    def restart(self) -> str:
        """Start it again; what to print on success (e.g. its new pid). Raises if it fails."""
        ...


class GaveUp(RuntimeError):
    """A target died more often than its policy allows."""


def describe_exit(returncode: int | None) -> str:
    """``-9`` -> ``killed by SIGKILL``, ``1`` -> ``exit code 1``, ``None`` -> unknown."""
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


RESTART_ERRORS = (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError, AssertionError)
"""What a failed start raises (nats-server exiting or not listening, pg_ctl failing)."""


@dataclass
class Watch:
    target: Target
    policy: RestartPolicy
    restarted_at: deque[float] = field(default_factory=deque)
    due: float | None = None
    """When the pending restart is due; None while the target runs."""


class Supervisor:
    """Polls its targets; restarts the dead ones after their back-off."""

    def __init__(
        self,
        watches: Iterable[Watch],
        say: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        housekeeping: Callable[[], None] = lambda: None,
        housekeeping_every_s: float = 5.0,
    ) -> None:
        self.watches = list(watches)
        self.say = say
        self.clock = clock
        self.housekeeping = housekeeping
        self.housekeeping_every_s = housekeeping_every_s
        self._housekept = float("-inf")

    def run(self, should_stop: Callable[[], bool], interval_s: float = 0.2) -> None:
        """Until told to stop; raises ``GaveUp`` when a target dies once too often."""
        while not should_stop():
            self.tick(should_stop)
            time.sleep(interval_s)

    def tick(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        if self.clock() - self._housekept >= self.housekeeping_every_s:
            self._housekept = self.clock()
            self.housekeeping()
        for watch in self.watches:
            if should_stop():
                return
            now = self.clock()
            if watch.due is None:
                if not watch.target.alive():
                    self._schedule(watch, now, f"died ({watch.target.ended()})")
            elif now >= watch.due:
                self._restart(watch, now)

    def _schedule(self, watch: Watch, now: float, what: str) -> None:
        policy, target = watch.policy, watch.target
        while watch.restarted_at and now - watch.restarted_at[0] >= policy.window_s:
            watch.restarted_at.popleft()
        attempt = len(watch.restarted_at) + 1
        minutes = f"{policy.window_s / 60:g} min"
        if policy.limit is not None and attempt > policy.limit:
            raise GaveUp(
                f"{target.name} {what} after {policy.limit} restarts in {minutes}; "
                f"giving up and stopping cityhall (log: {target.log_path})"
            )
        delay = policy.delay(attempt)
        watch.due = now + delay
        of = f" of {policy.limit} allowed in {minutes}" if policy.limit is not None else ""
        self.say(
            f"[red]{escape(f'{target.name} {what}')}; restarting it in {delay:g}s "
            f"{escape(target.where)} (restart {attempt}{of})[/] "
            f"(log: {escape(str(target.log_path))})"
        )

    def _restart(self, watch: Watch, now: float) -> None:
        watch.restarted_at.append(now)
        watch.due = None
        try:
            done = watch.target.restart()
        except RESTART_ERRORS as exc:
            self._schedule(watch, self.clock(), f"did not start again ({exc})")
            return
        took = self.clock() - now
        self.say(f"[green]{watch.target.name} restarted[/] ({escape(done)}; took {took:.1f}s)")


# -- the embedded servers as targets -----------------------------------------------------------


class NatsTarget:
    """The embedded nats-server, a child process of `cityhall up`."""

    name = "nats-server"

    def __init__(self, server: EmbeddedNats) -> None:
        self.server = server
        self._last_pid: int | None = self._pid()

    def _pid(self) -> int | None:
        return self.server.process.pid if self.server.process is not None else None

    @property
    def where(self) -> str:
        return f"on the same port ({self.server.port}) and store ({self.server.store_dir})"

    @property
    def log_path(self) -> Path:
        return self.server.log_file

    def alive(self) -> bool:
        proc = self.server.process
        return proc is not None and proc.poll() is None

    def ended(self) -> str:
        proc = self.server.process
        return f"pid {self._last_pid}, {describe_exit(proc.returncode if proc else None)}"

    def restart(self) -> str:
        self.server.process = None
        self.server.start()
        self._last_pid = self._pid()
        return f"pid {self._last_pid}, {self.server.url}"


class PostgresTarget:
    """The embedded PostgreSQL. Its postmaster is a daemon (``pg_ctl start``) that becomes a
    child of `cityhall up` once ``become_subreaper()`` is in effect, so its exit status can be
    read; a postmaster an earlier `up` left running is watched by its pid alone."""

    name = "postgres"

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self.pid = server.pid()
        self._returncode: int | None = None

    @property
    def where(self) -> str:
        return f"on the same data directory ({self.server.pgdata}) and socket"

    @property
    def log_path(self) -> Path:
        return self.server.pgdata / "log"

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not our child: a server an earlier `up` left running
            return process_exists(self.pid)
        if done == 0:
            return True
        self._returncode = os.waitstatus_to_exitcode(status)
        return False

    def ended(self) -> str:
        return f"postmaster pid {self.pid}, {describe_exit(self._returncode)}"

    def restart(self) -> str:
        self._returncode = None
        self.server.resume()
        self.pid = self.server.pid()
        if self.pid is None or not process_exists(self.pid):
            raise RuntimeError(f"no postmaster running after pg_ctl start (see {self.log_path})")
        return f"postmaster pid {self.pid}, {self.server.socket_dir}"


def process_exists(pid: int) -> bool:
    """Running and not a zombie (an exited process nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


# -- orphans -----------------------------------------------------------------------------------


def become_subreaper() -> None:
    """Linux: orphaned descendants (the postmaster once ``pg_ctl`` exits, its backends once it
    dies) become children of this process instead of init's, so their exit is seen here."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_child_subreaper = 36
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_child_subreaper, 1)


def reap_orphans(keep: set[int]) -> None:
    """Collect the exit status of adopted children that have exited (a dead postmaster's
    backends), except the pids in ``keep``, whose owners collect their own."""
    for pid in _children():
        if pid not in keep and not process_exists(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _children() -> list[int]:
    """This process's children, from /proc (Linux; empty elsewhere)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(stat.parent.name))
    return found
