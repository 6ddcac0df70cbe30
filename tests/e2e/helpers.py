"""Helpers for the end-to-end tests: processes, free ports, polling, an OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from cityhall.embedded import free_port
from services.registry import SERVICE_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]

# Environment a developer's shell may carry that would change what the processes under test do.
_INHERITED_TO_DROP = (
    "NATS_URL",
    "DATABASE_URL",
    "CITYHALL_HOME",
    "CITYHALL_NAMESPACE",
    "CITYHALL_NATS_PORT",
    "CITYHALL_PORT_BASE",
    "CITYHALL_FAULT_KILL_BEFORE_PUBLISH",
    "CITYHALL_FAULT_KILL_AFTER_PUBLISH",
    "HTTP_PORT",
    "OTEL_SERVICE_NAME",
)


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without cityhall/OTel settings, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _INHERITED_TO_DROP
        and not k.startswith("OTEL_")
        and not k.endswith("_DATABASE_URL")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port_base(count: int = len(SERVICE_NAMES)) -> int:
    """A port ``base`` such that ``base .. base + count - 1`` are all free."""
    for _ in range(200):
        base = free_port()
        if base + count <= 65535 and all(_bindable(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def service_ports(base: int) -> dict[str, int]:
    return {name: base + i for i, name in enumerate(SERVICE_NAMES)}


async def wait_until(
    predicate: Callable[[], Awaitable[Any]],
    *,
    timeout: float,
    interval: float = 0.1,
    message: Callable[[], str] | str = "",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(
                f"condition not met in {timeout}s (last value {last!r})\n{text}".rstrip()
            )
        await asyncio.sleep(interval)


async def is_ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/readyz", timeout=2.0)).status_code == 200
    except httpx.HTTPError:
        return False


def read_logs(paths: Iterable[Path], tail: int = 60) -> str:
    parts = []
    for path in sorted(paths):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError as exc:
            parts.append(f"--- {path}: {exc}")
            continue
        parts.append(f"--- {path} (last {tail} lines)\n" + "\n".join(lines[-tail:]))
    return "\n".join(parts)


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an unreaped exited process is not alive). Safe on pid reuse."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def psutil_process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


class Spawned:
    """A subprocess started by a test, with its output in a file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                args,
                env=dict(env),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.process = psutil.Process(self.popen.pid)
        self.descendants: dict[int, psutil.Process] = {}
        self.cmdlines: dict[int, str] = {}

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def record_descendants(self) -> dict[int, psutil.Process]:
        """Remember every process below this one (kept after they exit, for later checks)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in self.process.children(recursive=True):
                known = self.descendants.setdefault(child.pid, child)
                # Read again each time: a child seen between fork and exec still shows the
                # parent's command line.
                with contextlib.suppress(psutil.Error):
                    self.cmdlines[child.pid] = " ".join(known.cmdline())
        return self.descendants

    def running_descendants(self, contains: str) -> list[psutil.Process]:
        """Descendants alive now whose command line contains ``contains``."""
        self.record_descendants()
        return [
            p
            for pid, p in self.descendants.items()
            if contains in self.cmdlines.get(pid, "") and alive(p)
        ]

    def output(self, tail: int = 80) -> str:
        return read_logs([self.log_path], tail)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """The return code, polling so the event loop keeps running; TimeoutError if it runs."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} (pid {self.pid}) still running after {timeout}s")
            await asyncio.sleep(0.05)
        return code

    def kill_all(self) -> None:
        """Clean-up after a failure: SIGKILL this process and the descendants it had."""
        self.record_descendants()
        if self.popen.poll() is None:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        for child in self.descendants.values():
            if alive(child):
                with contextlib.suppress(psutil.Error):
                    child.kill()


_PROVISIONED: set[tuple[str, str]] = set()


def provision_for(env: Mapping[str, str]) -> None:
    """What the operator does before `cityhall serve` (services may not create streams or
    consumers): once per server and namespace, in a thread of its own (tests run in a loop)."""
    from concurrent.futures import ThreadPoolExecutor

    from cityhall.provision import provision_all

    url, namespace = env.get("NATS_URL", "nats://127.0.0.1:4223"), env["CITYHALL_NAMESPACE"]
    if (url, namespace) in _PROVISIONED:
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, provision_all(url, namespace, None)).result(timeout=60)
    _PROVISIONED.add((url, namespace))


class Processes:
    """Every process a test starts; ``stop_all`` ends whatever is still running."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Spawned] = []
        self.extra: list[tuple[psutil.Process, int]] = []

    def cityhall(self, name: str, *args: str, env: Mapping[str, str]) -> Spawned:
        if args[:1] == ("serve",):
            provision_for(env)
        proc = Spawned(
            name,
            [sys.executable, "-m", "cityhall", *args],
            env,
            self.log_dir / f"{name}-{len(self.started)}.out",
        )
        self.started.append(proc)
        return proc

    def also_stop(self, proc: psutil.Process, sig: int = signal.SIGTERM) -> None:
        """A process started on the test's behalf outside the tree (e.g. a detached server):
        if it still runs after the others, it gets ``sig``, then SIGKILL."""
        self.extra.append((proc, sig))

    def stop_all(self, grace_s: float = 30.0) -> None:
        """SIGINT what is still running, wait up to ``grace_s``, then SIGKILL what is left."""
        running = [p for p in self.started if p.returncode is None]
        for p in running:
            p.record_descendants()
            p.signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for p in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.1, deadline - time.monotonic()))
        for p in self.started:
            p.kill_all()
        for proc, sig in self.extra:
            if alive(proc):
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
                    proc.wait(15)
            if alive(proc):
                with contextlib.suppress(psutil.Error):
                    proc.kill()


# -- OTLP/HTTP receiver ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    scope: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]

    def __str__(self) -> str:
        parent = self.parent_span_id or "-"
        return (
            f"{self.service:13} {self.trace_id} {self.span_id} parent={parent:16}"
            f" {kind_name(self.kind):8} {self.scope}: {self.name}"
        )


def kind_name(kind: int) -> str:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    return str(Span.SpanKind.Name(kind)).removeprefix("SPAN_KIND_")


def _any_value(value: Any) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver (protobuf) on 127.0.0.1, in a background thread."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._record(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _record(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for rs in request.resource_spans:
            resource = {a.key: _any_value(a.value) for a in rs.resource.attributes}
            service = str(resource.get("service.name", ""))
            for ss in rs.scope_spans:
                for span in ss.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            scope=ss.scope.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _any_value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.requests += 1

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def dump(self, spans: Iterable[ReceivedSpan] | None = None) -> str:
        return "\n".join(str(s) for s in (self.snapshot() if spans is None else spans))
