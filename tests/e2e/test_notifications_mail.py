"""`cityhall up` catches the notifications' mail in its SMTP sink, and `cityhall mail` shows it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.applications import ApplicationSubmittedV1, Channel
from contracts.envelope import Envelope
from services.runtime.auth import mint_applicant_token
from tests.e2e.helpers import (
    REPO_ROOT,
    Processes,
    clean_env,
    free_port_base,
    is_ready,
    read_logs,
    service_ports,
    wait_until,
)
from tests.integration.helpers import publish_envelope

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_up_catches_the_acknowledgement_mail_and_cityhall_mail_shows_it(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    base = free_port_base()
    notifications = f"http://127.0.0.1:{service_ports(base)['notifications']}"
    env = clean_env(
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        CITYHALL_NAMESPACE=namespace,
        CITYHALL_PORT_BASE=str(base),
        CITYHALL_HOME=str(home),
        CITYHALL_SMTP_PORT=str(free_port()),
        NOTIFY_SENDER_POLL_S="0.1",
    )
    up = processes.cityhall("up", "up", env=env)

    def logs() -> str:
        return up.output() + "\n" + read_logs((home / "logs").glob("*.log"))

    def cityhall_mail(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cityhall", "mail", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    async with httpx.AsyncClient(timeout=5.0) as http:

        async def ready() -> bool:
            assert up.returncode is None, f"cityhall up exited ({up.returncode})\n{logs()}"
            return await is_ready(http, notifications)

        await wait_until(ready, timeout=90, interval=0.25, message=logs)
        assert up.running_descendants("aiosmtpd"), up.cmdlines
        applicant = uuid.uuid4()
        # The citizen records their own contact, signed in (`up` made the gateway's secret).
        secret = (home / "applicant-jwt.secret").read_text().strip()
        token = mint_applicant_token(applicant, secret)
        put = await http.put(
            f"{notifications}/contacts/{applicant}",
            json={"email": "taro.koriyama@example.jp", "language": "ja"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 200, put.text

    data = ApplicationSubmittedV1(
        application_id=uuid.uuid4(),
        procedure_code="JUMINHYO",
        channel=Channel.ONLINE,
        submitted_at=datetime.now(UTC),
        applicant_id=applicant,
    )
    await publish_envelope(js, namespace, Envelope.new(data, source="/cityhall/applications"))

    async def listed() -> list[dict[str, str]]:
        return [json.loads(line) for line in cityhall_mail("--json").splitlines()]

    [mail] = await wait_until(listed, timeout=30, interval=0.5, message=logs)
    assert mail["to"] == "taro.koriyama@example.jp"
    assert "申請を受け付けました" in mail["subject"]
    assert mail["date"].endswith("JST")
    assert "受付番号" in mail["text"]
    assert "JUMINHYO" in cityhall_mail()  # the table for people (its columns wrap)
    shown = cityhall_mail("--show", "1")
    assert str(data.application_id) in shown
    assert "Message-ID:" in shown
