"""The sidecars of `cityhall up` (cityhall/local/: the SMTP sink, the payment-provider
simulator, the trace store) as processes it starts, waits for, supervises and stops.

A ``SidecarProcess`` is a supervision ``Target`` (cityhall/supervise.py): one that dies is
started again with the same command, environment and port, its data where it was.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cityhall.embedded import _set_parent_death_signal, port_is_open
from cityhall.local import Sidecar
from cityhall.supervise import describe_exit


class SidecarProcess:
    def __init__(self, sidecar: Sidecar, log_path: Path) -> None:
        self.sidecar = sidecar
        self.log_path = log_path
        self._last_pid: int | None = None

    @property
    def name(self) -> str:
        return self.sidecar.name

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.sidecar.process

    @property
    def where(self) -> str:
        port = self.sidecar.ready_port
        return "with the same settings" + (f" on port {port}" if port is not None else "")

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.sidecar.process = subprocess.Popen(
                self.sidecar.argv,
                env={**os.environ, **self.sidecar.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        self._last_pid = self.sidecar.process.pid

    def wait_ready(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Until its port accepts connections (if it has one) or ``stopping()``; RuntimeError
        if it exits or takes longer than its ``ready_timeout_s``."""
        port, proc = self.sidecar.ready_port, self.sidecar.process
        if port is None or proc is None:
            return
        deadline = time.monotonic() + self.sidecar.ready_timeout_s
        while not port_is_open("127.0.0.1", port) and not stopping():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
            time.sleep(0.05)

    def alive(self) -> bool:
        proc = self.sidecar.process
        return proc is not None and proc.poll() is None

    def ended(self) -> str:
        proc = self.sidecar.process
        return f"pid {self._last_pid}, {describe_exit(proc.returncode if proc else None)}"

    def restart(self) -> str:
        """Start it again; the supervisor's next tick sees it die if it cannot listen."""
        self.start()
        return f"pid {self._last_pid}"

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.sidecar.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
