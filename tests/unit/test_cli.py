"""The `cityhall` command's own argument checks (the commands' effects are tested on servers)."""

from __future__ import annotations

from typer.testing import CliRunner

from cityhall.cli import app


def test_dlq_replay_asks_which_letters_rather_than_replaying_everything() -> None:
    result = CliRunner().invoke(app, ["dlq", "replay"])
    assert result.exit_code == 2
    assert "--seq N (repeatable) or --consumer NAME" in result.output


def test_every_service_command_is_registered() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "up",
        "serve",
        "relay",
        "migrate",
        "dlq",
        "contracts",
        "catalog",
        "terminals",
        "mail",
        "notifications",
        "reporting",
        "demo",
    ):
        assert command in result.output, command


def test_relay_names_the_services_it_knows() -> None:
    result = CliRunner().invoke(app, ["relay", "parking"])
    assert result.exit_code == 2
    assert "unknown service 'parking'" in result.output
