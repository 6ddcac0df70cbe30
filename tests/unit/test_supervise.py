"""`cityhall up`'s supervisor (cityhall/supervise.py) on fake targets and a fake clock: what it
prints when something dies, its back-off, a failed restart tried again, and the give-up after
too many deaths. The real servers killed and restarted: tests/e2e/test_stack_supervised.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cityhall.supervise import (
    SERVER_RESTARTS,
    SERVICE_RESTARTS,
    GaveUp,
    RestartPolicy,
    Supervisor,
    Watch,
    describe_exit,
)


class FakeServer:
    name = "nats-server"
    where = "on the same port (4223)"
    log_path = Path("/logs/nats-server.log")

    def __init__(self) -> None:
        self.running = True
        self.starts = 0
        self.fail_next_start = False

    def alive(self) -> bool:
        return self.running

    def ended(self) -> str:
        return "pid 7, killed by SIGKILL"

    def restart(self) -> str:
        self.starts += 1
        if self.fail_next_start:
            self.fail_next_start = False
            raise RuntimeError("port 4223 is already taken")
        self.running = True
        return "pid 8"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervisor(target: FakeServer, policy: RestartPolicy) -> tuple[Supervisor, Clock, list[str]]:
    clock, lines = Clock(), []
    return Supervisor([Watch(target, policy)], lines.append, clock=clock), clock, lines


def due(sup: Supervisor) -> float:
    """When the pending restart is due."""
    when = sup.watches[0].due
    assert when is not None
    return when


def test_exit_statuses_read_as_an_operator_would() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(None) == "exit status unknown"


def test_a_dead_server_is_announced_then_restarted_after_its_back_off() -> None:
    server = FakeServer()
    sup, clock, lines = supervisor(server, SERVER_RESTARTS)
    sup.tick()
    assert lines == []
    server.running = False
    sup.tick()
    assert lines == [
        "[red]nats-server died (pid 7, killed by SIGKILL); restarting it in 1s on the same port "
        "(4223) (restart 1 of 5 allowed in 10 min)[/] (log: /logs/nats-server.log)"
    ]
    clock.now += 0.5
    sup.tick()
    assert server.starts == 0  # still backing off
    clock.now += 0.5
    sup.tick()
    assert server.starts == 1
    assert lines[-1] == "[green]nats-server restarted[/] (pid 8; took 0.0s)"


def test_the_back_off_doubles_and_a_failed_start_is_tried_again() -> None:
    server = FakeServer()
    sup, clock, lines = supervisor(server, SERVER_RESTARTS)
    delays = []
    for _ in range(3):
        server.running = False
        sup.tick()
        delays.append(due(sup) - clock.now)
        clock.now = due(sup)
        sup.tick()
    assert delays == [1.0, 2.0, 4.0]
    server.running, server.fail_next_start = False, True
    sup.tick()
    clock.now = due(sup)
    sup.tick()
    assert (
        "nats-server did not start again (port 4223 is already taken); restarting it in 16s"
        in (lines[-1])
    )
    assert not server.running


def test_a_server_that_keeps_dying_stops_the_stack() -> None:
    server = FakeServer()
    sup, clock, _lines = supervisor(server, SERVER_RESTARTS)
    for _ in range(5):
        server.running = False
        sup.tick()
        clock.now = due(sup)
        sup.tick()
    server.running = False
    with pytest.raises(GaveUp, match="after 5 restarts in 10 min; giving up and stopping"):
        sup.tick()


def test_restarts_long_ago_are_forgotten() -> None:
    server = FakeServer()
    sup, clock, lines = supervisor(server, SERVER_RESTARTS)
    for _ in range(5):
        server.running = False
        sup.tick()
        clock.now = due(sup)
        sup.tick()
        clock.now += SERVER_RESTARTS.window_s  # up for ten minutes before it dies again
    server.running = False
    sup.tick()
    assert "restarting it in 1s" in lines[-1]
    assert "(restart 1 of 5" in lines[-1]


def test_a_service_is_restarted_for_as_long_as_it_takes() -> None:
    server = FakeServer()
    sup, clock, lines = supervisor(server, SERVICE_RESTARTS)
    for _ in range(8):
        server.running = False
        sup.tick()
        clock.now = due(sup)
        sup.tick()
    assert server.starts == 8
    assert "restarting it in 30s" in lines[-2]
    assert "(restart 8)" in lines[-2]
