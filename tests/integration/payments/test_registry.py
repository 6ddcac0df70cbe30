"""The registry: facilities loaded into the schema, terminals registered by the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from cityhall.cli import app
from services.payments.handlers.registry import register_terminal
from tests.integration.helpers import wait_for


async def test_the_34_facilities_are_loaded_into_the_schema(payments: Any) -> None:
    async def loaded() -> int:
        return int(await payments.pool.fetchval("SELECT count(*) FROM facilities")) == 34

    await wait_for(loaded)
    name = await payments.pool.fetchval("SELECT name_ja FROM facilities WHERE code = 'shiminka'")
    assert name == "市民課"


async def test_terminals_at_one_facility_are_numbered_in_turn(payments: Any) -> None:
    first = await register_terminal(payments.pool, "bijutsukan")
    second = await register_terminal(payments.pool, "bijutsukan", "pos_register")
    assert (first.terminal_id, second.terminal_id) == ("bijutsukan-t01", "bijutsukan-t02")
    assert second.subject == "terminals.bijutsukan.bijutsukan-t02.tx.v1"
    assert first.inbox_prefix != second.inbox_prefix


def test_cityhall_terminals_register_writes_credentials_and_prints_where(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    nats_url: str,
    namespace: str,
    db: asyncpg.Connection,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.setenv("CITYHALL_NAMESPACE", namespace)
    monkeypatch.setenv("CITYHALL_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["terminals", "register", "shiminka"])
    assert result.exit_code == 0, result.output

    path = Path(result.stdout.strip())
    assert path == tmp_path / "terminals" / "shiminka-t01.json"
    creds = json.loads(path.read_text())
    assert creds["facility_code"] == "shiminka"
    assert creds["subject"] == "terminals.shiminka.shiminka-t01.tx.v1"
    assert creds["nkey_seed"].startswith("SU")  # the terminal's own seed, nobody else's
    assert creds["nats_url"] == nats_url
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_registering_at_an_unknown_facility_is_a_clear_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CITYHALL_NAMESPACE", namespace)
    monkeypatch.setenv("CITYHALL_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["terminals", "register", "no-such-place"])
    assert result.exit_code == 2
    assert "no facility has the code 'no-such-place'" in result.output
