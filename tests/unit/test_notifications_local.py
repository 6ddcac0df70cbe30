"""`cityhall up`'s SMTP sink: where it listens, and what the service is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityhall.local.notifications import prepare, sink_port


def test_the_sink_uses_the_port_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYHALL_SMTP_PORT", "2626")
    assert sink_port() == 2626


def test_a_stack_on_its_own_ports_gets_a_free_sink_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYHALL_SMTP_PORT", raising=False)
    monkeypatch.setenv("CITYHALL_PORT_BASE", "18001")
    assert sink_port() != 8025


def test_the_service_is_pointed_at_the_sink_and_mail_lands_under_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CITYHALL_SMTP_PORT", "2626")
    extras = prepare(tmp_path)
    assert extras.env["NOTIFY_SMTP_PORT"] == "2626"
    [sink] = extras.sidecars
    assert sink.ready_port == 2626
    assert str(tmp_path / "mail") in sink.argv
    assert (tmp_path / "mail" / "new").is_dir()
