"""`cityhall up` with NATS authentication: a terminal registered while the stack runs publishes
with its own credentials on its own subject, and its payment reaches the staff API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import nats
import nats.errors
import pytest

from contracts.envelope import CE_ID, CE_SOURCE, CE_SPECVERSION, CE_TIME, CE_TYPE
from contracts.payments import TerminalTransactionV1, terminal_subject
from tests.e2e.helpers import Processes, clean_env, wait_until
from tests.e2e.test_stack_embedded import start_stack, stop_stack

SERVICES = ("applications", "payments", "notifications", "reporting")
STAFF = {"authorization": "Bearer tok-e2e-000000001"}


def capture(creds: dict[str, str], tx_id: str, facility: str | None = None) -> dict[str, Any]:
    return {
        "transaction_id": tx_id,
        "terminal_id": creds["terminal_id"],
        "facility_code": facility or creds["facility_code"],
        "kind": "capture",
        "method": "qr",
        "brand": "PayPay",
        "amount_yen": 300,
        "item": "住民票の写し",
        "occurred_at": datetime.now(UTC).isoformat(),
    }


async def publish(nc: Any, subject: str, body: dict[str, Any]) -> None:
    msg_id = f"{body['terminal_id']}/{body['transaction_id']}"
    headers = {
        CE_SPECVERSION: "1.0",
        CE_ID: msg_id,
        CE_SOURCE: f"/terminals/{body['terminal_id']}",
        CE_TYPE: TerminalTransactionV1.event_type,
        CE_TIME: datetime.now(UTC).isoformat(),
        "Nats-Msg-Id": msg_id,
    }
    await nc.jetstream(timeout=2.0).publish(subject, json.dumps(body).encode(), headers=headers)


async def no_role_signs_in_without_its_password_or_reads_another_s_schema(
    home: Path, pg_url: str
) -> None:
    """The local PostgreSQL trusts nobody: each role signs in with its own password, which sits
    in a file of its own (0600), and reaches its own schema only."""
    for role in ("postgres", "payments", "reporting"):
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await asyncpg.connect(pg_url.replace("postgres@", f"{role}@", 1), passfile="/dev/null")
    files = sorted((home / "postgres-auth").glob("*.pgpass"))
    assert {f.stem for f in files} == {"postgres", *SERVICES}
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o600
        assert f.read_text().count("\n") == 1  # its own role's password, nobody else's
    payments = await asyncpg.connect(
        pg_url.replace("postgres@", "payments@", 1),
        passfile=str(home / "postgres-auth" / "payments.pgpass"),
    )
    try:
        assert await payments.fetchval("SELECT count(*) FROM payments.facilities") == 34
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await payments.fetch("SELECT * FROM reporting.inbox LIMIT 1")
    finally:
        await payments.close()


async def test_a_terminal_registered_while_the_stack_runs_publishes_only_on_its_own_subject(
    processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_STAFF_TOKENS", "e2e=tok-e2e-000000001")
    home = tmp_path / "home"
    async with httpx.AsyncClient(timeout=5.0) as http:
        run = await start_stack(processes, home, http)

        async def printed() -> tuple[str, str] | None:
            output = run.up.output(tail=200)
            nats_at = re.search(r"nats-server on (nats://127\.0\.0\.1:\d+)", output)
            pg_at = re.search(r"PostgreSQL (postgresql://\S+)", output)
            return (nats_at.group(1), pg_at.group(1)) if nats_at and pg_at else None

        nats_url, pg_url = await wait_until(printed, timeout=10, message=run.logs)
        await no_role_signs_in_without_its_password_or_reads_another_s_schema(home, pg_url)

        with pytest.raises(nats.errors.Error):  # authentication is on: no anonymous client
            await nats.connect(nats_url, allow_reconnect=False, max_reconnect_attempts=0)

        registered = subprocess.run(
            [sys.executable, "-m", "cityhall", "terminals", "register", "shiminka"],
            # As an operator types it beside `cityhall up`: its operator.env gives the servers
            # (payments' database URL names payments' password file).
            env=clean_env(CITYHALL_HOME=str(home)),
            capture_output=True,
            text=True,
            check=False,
        )
        assert registered.returncode == 0, registered.stderr
        creds_path = Path(registered.stdout.strip())
        assert creds_path.parent == home / "terminals"
        creds = json.loads(creds_path.read_text())

        async def connected() -> Any:
            try:
                return await nats.connect(
                    nats_url,
                    nkeys_seed_str=creds["nkey_seed"],
                    inbox_prefix=creds["inbox_prefix"],
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                )
            except Exception:
                return None  # until the server has reloaded its users

        terminal = await wait_until(connected, timeout=20, message=run.logs)
        try:
            await publish(terminal, f"cityhall.{creds['subject']}", capture(creds, "E1"))
            elsewhere = terminal_subject("bijutsukan", creds["terminal_id"])
            # Refused by the server: the client sees no PubAck (a timeout) or, when the
            # server's -ERR arrives first, the permissions violation itself. Either way nothing
            # is stored (the staff API below lists E1 alone).
            with pytest.raises(nats.errors.Error):
                await publish(terminal, f"cityhall.{elsewhere}", capture(creds, "E2", "bijutsukan"))
        finally:
            await terminal.close()

        async def listed() -> list[dict[str, Any]] | None:
            # The staff API's days are Asia/Tokyo days (from 15:00 UTC it is already
            # tomorrow there).
            today = datetime.now(ZoneInfo("Asia/Tokyo")).date().isoformat()
            response = await http.get(
                f"{run.urls['payments']}/payments",
                params={"from": "2000-01-01", "to": today},
                headers=STAFF,
            )
            body: list[dict[str, Any]] = response.json()
            return body or None

        payments = await wait_until(listed, timeout=20, message=run.logs)
        assert [(p["terminal_id"], p["amount_yen"]) for p in payments] == [
            (creds["terminal_id"], 300)
        ]
        await stop_stack(run)
