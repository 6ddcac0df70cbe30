"""What every benchmark section shares: servers, services as processes, memory, figures.

A section is a script under ``bench/`` that measures a few figures and prints one line per
figure (``figure()``); with ``--json PATH`` it also writes them to PATH, which is how
``bench/run.py`` (``make bench``) collects them. Sections run alone too:

    .venv/bin/python bench/pipeline.py            # embedded NATS + PostgreSQL of its own
    NATS_URL=nats://127.0.0.1:4222 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/pipeline.py        # servers already running

Services run as real processes (``cityhall serve <name>``), as in production, so that each
has its own interpreter (the machine's two cores are shared by them, NATS and PostgreSQL)
and its memory (peak RSS) can be read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cityhall.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402

RESULTS: list[dict[str, Any]] = []


# -- figures ------------------------------------------------------------------------------------


def figure(name: str, value: float | int | str, unit: str = "", note: str = "") -> None:
    """Print one figure on its own line and keep it for ``--json``."""
    shown = f"{value:,}" if isinstance(value, int) else value
    if isinstance(value, float):
        shown = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    print(f"{name:<44} {shown:>12} {unit:<9} {note}".rstrip(), flush=True)
    RESULTS.append({"name": name, "value": value, "unit": unit, "note": note})


def write_results(path: str | None, extra: dict[str, Any] | None = None) -> None:
    if path:
        Path(path).write_text(json.dumps({"figures": RESULTS, **(extra or {})}, indent=2))


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def progress(text: str) -> None:
    """A progress line on stderr (figures go to stdout)."""
    print(f"  … {text}", file=sys.stderr, flush=True)


# -- servers ------------------------------------------------------------------------------------


@dataclass
class Servers:
    nats_url: str
    database_url: str
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    workdir: Path | None = None

    def nats_cpu_s(self) -> float | None:
        """CPU seconds the benchmark's own nats-server has used (None: not ours)."""
        if self.nats is None or self.nats.process is None:
            return None
        return process_cpu_s(self.nats.process.pid)

    def postgres_cpu_s(self) -> float | None:
        """CPU seconds of the embedded PostgreSQL and its backends (None: not ours)."""
        if self.postgres is None or (pid := self.postgres.pid()) is None:
            return None
        import psutil

        total = 0.0
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total


@contextlib.contextmanager
def servers(
    *, sync_interval: str = "2m", postgres: bool = True, nats_from_env: bool = True
) -> Iterator[Servers]:
    """NATS (JetStream, file storage) and PostgreSQL: ``NATS_URL``/``DATABASE_URL`` when set,
    else embedded servers of the benchmark's own in a temporary directory. With
    ``nats_from_env=False`` the NATS server is always the benchmark's own (its
    ``sync_interval`` is then known)."""
    with tempfile.TemporaryDirectory(prefix="cityhall-bench-") as tmp:
        work = Path(tmp)
        embedded_nats = embedded_pg = None
        nats_url = os.environ.get("NATS_URL") if nats_from_env else None
        database_url = os.environ.get("DATABASE_URL")
        try:
            if not nats_url:
                embedded_nats = start_nats(work / "nats", sync_interval=sync_interval)
                nats_url = embedded_nats.url
            if not database_url and postgres:
                embedded_pg = EmbeddedPostgres(work / "pg" / "data")
                embedded_pg.start()
                database_url = embedded_pg.url()
            yield Servers(nats_url, database_url or "", embedded_nats, embedded_pg, work)
        finally:
            if embedded_nats is not None:
                embedded_nats.stop()
            if embedded_pg is not None:
                embedded_pg.stop()


def start_nats(store_dir: Path, *, sync_interval: str = "2m") -> EmbeddedNats:
    server = EmbeddedNats(store_dir, port=free_port(), sync_interval=sync_interval)
    server.start()
    return server


def new_namespace(prefix: str = "bench") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def cleanup(nats_url: str, database_url: str, namespace: str) -> None:
    """Remove a namespace's streams and schemas."""
    with contextlib.suppress(Exception):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(namespace.upper() + "_"):
                await js.delete_stream(info.config.name)
        await nc.close()
    if database_url:
        conn = await asyncpg.connect(database_url)
        try:
            for row in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{namespace}\\_%"
            ):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
        finally:
            await conn.close()


# -- services as processes ----------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """``cityhall serve <name>`` as a child process, on the benchmark's servers."""

    name: str
    nats_url: str
    database_url: str
    namespace: str
    env: dict[str, str] = field(default_factory=dict)
    command: str = "serve"
    """``serve``, or ``relay``: the service's outbox relay alone."""
    port: int = field(default_factory=free_port)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def schema(self) -> str:
        return f"{self.namespace}_{self.name}"

    @property
    def label(self) -> str:
        """The process in figures: the service's name, ``<name>_relay`` for its relay."""
        return self.name if self.command == "serve" else f"{self.name}_{self.command}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.namespace}-{self.label}.log"

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "CITYHALL_", "NATS_", "HTTP_"))
            and not k.endswith("DATABASE_URL")
        }
        env.update(
            {
                "NATS_URL": self.nats_url,
                "DATABASE_URL": self.database_url,
                "CITYHALL_NAMESPACE": self.namespace,
                "HTTP_PORT": str(self.port),
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        if self.command == "serve":  # the operator's step: services may not create consumers
            subprocess.run(
                [sys.executable, "-m", "cityhall", "provision"],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        handle = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cityhall", self.command, self.name],
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        handle.close()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.label} exited with {self.process.returncode}:\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz", timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.label} not ready in {timeout_s}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory now (MB)."""
        return _status_kb(self.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """The highest resident memory since the process started (VmHWM, MB)."""
        return _status_kb(self.pid, "VmHWM") / 1024

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        return process_cpu_s(self.pid)

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all CPUs' time that was busy between two ``machine_busy()`` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total else 0.0
