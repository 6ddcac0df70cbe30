"""`cityhall up`: the whole platform on one machine.

Starts an embedded NATS (JetStream) and an embedded PostgreSQL unless ``NATS_URL`` /
``DATABASE_URL`` point at servers already running, prepares each service's schema and the
streams, starts the four services as separate processes, waits until each one reports ready,
and prints where they are. Then it keeps them running: a service or an embedded server that
dies is announced and started again (cityhall/supervise.py). Ctrl-C or SIGTERM stops the
services (each drains what it holds), then NATS, then PostgreSQL. Data stays under the home
directory (``.cityhall/``) for next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from cityhall.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    _set_parent_death_signal,
    signal_reload,
)
from cityhall.files import write_private
from cityhall.local import LocalExtras, Sidecar, applications, notifications, payments, traces
from cityhall.natsauth import (
    OPERATOR,
    BusUser,
    KeyDirectory,
    authorization_config,
    bus_users,
)
from cityhall.pgauth import DATABASE, bootstrap_database
from cityhall.sidecars import SidecarProcess
from cityhall.supervise import (
    SERVER_RESTARTS,
    SERVICE_RESTARTS,
    NatsTarget,
    PostgresTarget,
    Supervisor,
    Watch,
    become_subreaper,
    describe_exit,
    reap_orphans,
)
from contracts.subjects import DEFAULT_NAMESPACE
from services.registry import SERVICE_NAMES
from services.runtime.settings import DEFAULT_PORTS

console = Console(stderr=True, soft_wrap=True)


@dataclass
class StackConfig:
    home: Path
    nats_url: str | None = None
    database_url: str | None = None
    nats_port: int = 4223
    port_base: int | None = None
    namespace: str = DEFAULT_NAMESPACE
    sync_interval: str = "2m"
    ready_timeout_s: float = 120.0
    extra_env: dict[str, str] = field(default_factory=dict)
    nats_auth: bool = True
    """The embedded NATS admits nkey users only: one per service, one for the operator, and
    the users services add (payment terminals); see cityhall/natsauth.py."""
    traces: bool = False
    """Run the local trace store (cityhall/local/traces.py) and have every service export its
    spans to it."""

    def port(self, service: str) -> int:
        if self.port_base is None:
            return DEFAULT_PORTS[service]
        return self.port_base + SERVICE_NAMES.index(service)


OPERATOR_ENV = "operator.env"


def key_directory(home: Path) -> KeyDirectory:
    """The seeds of the services' and the operator's NATS identities, one file each (0600)."""
    return KeyDirectory(home / "nats" / "keys")


def auth_file(home: Path) -> Path:
    """The users the embedded NATS admits, included by its configuration (public keys only)."""
    return home / "nats" / "auth.conf"


def write_bus_users(home: Path, users: list[BusUser]) -> bool:
    """Write the auth file; whether it changed."""
    text = authorization_config(users)
    path = auth_file(home)
    if path.is_file() and path.read_text() == text:
        return False
    write_private(path, text)
    return True


def refresh_bus_users(home: Path, namespace: str, database_urls: dict[str, str]) -> bool:
    """After a terminal is registered, rotated or revoked: rewrite the users and make the
    running embedded NATS reload them (seconds; nobody else is disconnected). Whether a running
    server was told."""
    write_bus_users(home, bus_users(key_directory(home), namespace, database_urls))
    pid_file = home / "nats" / "nats-server.pid"
    if not pid_file.is_file():
        return False
    signal_reload(pid_file)
    return True


LOCAL_SET_UPS: dict[str, Callable[[Path], LocalExtras]] = {
    "applications": applications.prepare,
    "payments": payments.prepare,
    "notifications": notifications.prepare,
}
"""Each service's local set-up (cityhall/local/), by service name; reporting needs none."""


def local_extras(home: Path, *, with_traces: bool = False) -> dict[str, LocalExtras]:
    extras = {name: prepare(home) for name, prepare in LOCAL_SET_UPS.items()}
    if with_traces:
        extras["traces"] = traces.prepare(home)
    return extras


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cityhall", "serve", self.name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own session: the terminal's Ctrl-C reaches `up` only, which stops the services
            # in order; the parent-death signal stops them even if `up` is killed outright.
            start_new_session=True,
            preexec_fn=_set_parent_death_signal,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # What the supervisor needs besides (cityhall/supervise.py: Target).
    where = "with the same settings"

    def ended(self) -> str:
        if self.process is None:
            return "not started"
        return f"pid {self.process.pid}, {describe_exit(self.process.returncode)}"

    def restart(self) -> str:
        self.start()
        assert self.process is not None
        return f"pid {self.process.pid}"


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.nats: EmbeddedNats | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.services: list[ServiceProcess] = []
        self.sidecars: list[SidecarProcess] = []
        self.extras: dict[str, LocalExtras] = {}
        self.database_urls: dict[str, str] = {}
        self._stop = False

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        started = time.monotonic()
        cfg.home.mkdir(parents=True, exist_ok=True)
        (cfg.home / "logs").mkdir(exist_ok=True)

        self.extras = local_extras(cfg.home, with_traces=cfg.traces)
        # The trace store first: it takes the longest to listen, meanwhile the servers start.
        for sidecar in self.extras.get("traces", LocalExtras()).sidecars:
            self._start_sidecar(sidecar)
        # PostgreSQL first: the NATS users include the terminals registered in payments' schema.
        if cfg.database_url is None:
            self.postgres = EmbeddedPostgres(cfg.home / "postgres")
            console.print(f"[bold]postgres[/]  starting embedded PostgreSQL in {cfg.home}/postgres")
            self.postgres.start()
            pg = self.postgres
            urls = asyncio.run(bootstrap_database(pg, cfg.home))
        else:
            urls = {s: cfg.database_url for s in SERVICE_NAMES}
        self.database_urls = urls

        nats_url = cfg.nats_url
        if nats_url is None:
            include = ""
            if cfg.nats_auth:
                users = bus_users(key_directory(cfg.home), cfg.namespace, urls)
                write_bus_users(cfg.home, users)
                include = f'include "{auth_file(cfg.home).name}"\n'
            self.nats = EmbeddedNats(
                cfg.home / "nats",
                port=cfg.nats_port,
                sync_interval=cfg.sync_interval,
                log_file=cfg.home / "logs" / "nats-server.log",
                extra_config=include,
            )
            console.print(f"[bold]nats[/]      starting embedded nats-server on {self.nats.url}")
            self.nats.start()
            nats_url = self.nats.url
        self._write_operator_env(nats_url, urls)
        self._provision(nats_url)

        shared_env = {k: v for x in self.extras.values() for k, v in x.shared_env.items()}
        for name, extra in self.extras.items():
            for sidecar in extra.sidecars if name != "traces" else []:
                self._start_sidecar(sidecar)
        for runner in self.sidecars:
            runner.wait_ready(lambda: self._stop)
            console.print(f"sidecar   {runner.name} ready")

        for name in SERVICE_NAMES:
            own = self.extras.get(name, LocalExtras())
            env = {
                **os.environ,
                **cfg.extra_env,
                **shared_env,
                **own.env,
                "NATS_URL": nats_url,
                f"{name.upper()}_DATABASE_URL": urls[name],
                "HTTP_PORT": str(cfg.port(name)),
                "CITYHALL_NAMESPACE": cfg.namespace,
            }
            if self.nats_auth_on:
                env["NATS_NKEY_FILE"] = str(key_directory(cfg.home).seed_file(name))
            proc = ServiceProcess(name, cfg.port(name), env, cfg.home / "logs" / f"{name}.log")
            self.services.append(proc)
            proc.start()
        console.print(f"services  starting: {', '.join(SERVICE_NAMES)} (logs in {cfg.home}/logs)")
        self._wait_ready(started)

    @property
    def nats_auth_on(self) -> bool:
        return self.nats is not None and self.config.nats_auth

    def _provision(self, nats_url: str) -> None:
        """The operator's step before any service starts: streams and durable consumers."""
        from cityhall.provision import provision_all

        seed = key_directory(self.config.home).seed_file(OPERATOR) if self.nats_auth_on else None
        done = asyncio.run(provision_all(nats_url, self.config.namespace, seed))
        console.print(f"provision {len(done)} streams and consumers ready")

    def _write_operator_env(self, nats_url: str, urls: dict[str, str]) -> None:
        """``<home>/operator.env``: what `cityhall dlq list`, `reporting rebuild`, `demo`, ...
        need to reach this stack (read by the CLI when NATS_URL is not set). Mode 0600; it
        names the operator's seed file rather than holding a secret itself."""
        lines = {
            "NATS_URL": nats_url,
            "CITYHALL_NAMESPACE": self.config.namespace,
            "CITYHALL_HOME": str(self.config.home),
            **{f"{s.upper()}_DATABASE_URL": urls[s] for s in SERVICE_NAMES},
        }
        if self.nats_auth_on:
            lines["NATS_NKEY_FILE"] = str(key_directory(self.config.home).seed_file(OPERATOR))
        write_private(
            self.config.home / OPERATOR_ENV, "".join(f"{k}={v}\n" for k, v in lines.items())
        )

    def _start_sidecar(self, sidecar: Sidecar) -> None:
        runner = SidecarProcess(sidecar, self.config.home / "logs" / f"{sidecar.name}.log")
        runner.start()
        self.sidecars.append(runner)
        console.print(f"sidecar   {runner.name} starting (log: {runner.log_path})")

    def _wait_ready(self, started: float) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        pending = {s.name: s for s in self.services}
        with httpx.Client(timeout=2.0) as client:
            while pending and time.monotonic() < deadline and not self._stop:
                for name, svc in list(pending.items()):
                    if not svc.alive():
                        raise RuntimeError(
                            f"{name} exited during start-up; see {svc.log_path}:\n"
                            + _tail(svc.log_path)
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{svc.url}/readyz").status_code == 200:
                            del pending[name]
                time.sleep(0.2)
        if self._stop:
            return  # Ctrl-C during start-up: a requested stop, not a failure
        if pending:
            raise TimeoutError(f"not ready in time: {', '.join(pending)}")
        self._print_ready(time.monotonic() - started)

    def _print_ready(self, elapsed: float) -> None:
        table = Table(title=f"cityhall is up ({elapsed:.1f}s)", title_justify="left")
        table.add_column("service")
        table.add_column("url")
        table.add_column("api docs")
        for svc in self.services:
            table.add_row(svc.name, svc.url, f"{svc.url}/docs")
        for extra in self.extras.values():
            for label, url in extra.urls.items():
                table.add_row(label, url, "")
        console.print(table)
        if self.nats is not None:
            console.print(f"NATS       {self.nats.url}  (data in {self.nats.store_dir})")
            if self.nats_auth_on:
                console.print(
                    f"           nkey users only ({auth_file(self.config.home)}); other "
                    f"`cityhall` commands connect as the operator with "
                    f"{self.config.home}/{OPERATOR_ENV}"
                )
        if self.postgres is not None:
            console.print(
                f"PostgreSQL {self.postgres.url(DATABASE)}  (password sign-in; each role's "
                f"password in {self.config.home}/postgres-auth/<role>.pgpass)"
            )
        console.print(
            "Try: curl -X POST localhost:8001/applications -H 'content-type: application/json' "
            '-d \'{"procedure_code": "JUMINHYO", "channel": "online"}\'\n'
            "     curl localhost:8004/kpi/applications/by-channel\n"
            "Ctrl-C stops everything; data is kept for the next run."
        )

    # -- run and stop --------------------------------------------------------------------------

    def supervise(self, should_stop: Callable[[], bool]) -> None:
        """Restart a service or an embedded server that dies unexpectedly (with back-off);
        return when told to stop; ``GaveUp`` when a server keeps dying."""
        watches = [Watch(svc, SERVICE_RESTARTS) for svc in self.services]
        watches += [Watch(sidecar, SERVICE_RESTARTS) for sidecar in self.sidecars]
        if self.nats is not None:
            watches.append(Watch(NatsTarget(self.nats), SERVER_RESTARTS))
        postmaster = PostgresTarget(self.postgres) if self.postgres is not None else None
        if postmaster is not None:
            watches.append(Watch(postmaster, SERVER_RESTARTS))

        def reap() -> None:
            """Adopted children that exited (a killed postmaster's backends); not those whose
            exit status is read elsewhere (by their ``Popen``, by the postmaster's watch)."""
            popens = [s.process for s in self.services] + [s.process for s in self.sidecars]
            popens.append(self.nats.process if self.nats is not None else None)
            keep = {p.pid for p in popens if p is not None}
            if postmaster is not None and postmaster.pid is not None:
                keep.add(postmaster.pid)
            reap_orphans(keep)

        Supervisor(watches, console.print, housekeeping=reap).run(should_stop)

    def stop(self) -> None:
        self._stop = True
        running = [s for s in self.services if s.alive()]
        for svc in running:
            assert svc.process is not None
            svc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25
        for svc in running:
            assert svc.process is not None
            try:
                svc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(f"[red]{svc.name} did not stop in time; killing it[/]")
                svc.process.kill()
                svc.process.wait()
        for sidecar in self.sidecars:
            sidecar.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        console.print("cityhall stopped; data kept in", str(self.config.home))


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def run_stack(config: StackConfig) -> int:
    """Start, supervise until SIGINT/SIGTERM, stop. Returns the exit code."""
    stack = LocalStack(config)
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        if not stop_requested:
            console.print(f"\n{signal.Signals(signum).name}: stopping cityhall…")
        stop_requested = True
        stack._stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    become_subreaper()  # before PostgreSQL starts: its postmaster is then a child of ours
    try:
        stack.start()
        stack.supervise(lambda: stop_requested)
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[red]cityhall up failed:[/] {exc}")
        return 1
    finally:
        stack.stop()
