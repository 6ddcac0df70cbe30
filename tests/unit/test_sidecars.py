"""A sidecar of `cityhall up` (the SMTP sink, the provider simulator, the trace store) as a
supervision target: it is seen to die, says how, and starts again with the same command."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from cityhall.local import Sidecar
from cityhall.sidecars import SidecarProcess
from cityhall.supervise import SERVICE_RESTARTS, Supervisor, Watch


def test_a_sidecar_that_dies_is_started_again(tmp_path: Path) -> None:
    sidecar = Sidecar("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    runner = SidecarProcess(sidecar, tmp_path / "sleeper.log")
    runner.start()
    try:
        first = runner.process
        assert first is not None
        assert runner.alive()
        first.send_signal(signal.SIGKILL)
        first.wait()
        said: list[str] = []
        now = [0.0]
        supervisor = Supervisor(
            [Watch(runner, SERVICE_RESTARTS)], said.append, clock=lambda: now[0]
        )
        supervisor.tick()
        assert "sleeper died" in said[0], said
        assert "SIGKILL" in said[0], said
        now[0] += SERVICE_RESTARTS.first_delay_s
        supervisor.tick()
        assert runner.alive()
        assert runner.process is not first
        assert "sleeper restarted" in said[-1], said
    finally:
        runner.stop()
    assert not runner.alive()
