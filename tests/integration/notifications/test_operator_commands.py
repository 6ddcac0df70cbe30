"""`cityhall notifications failed | pending | resend` against the service behind a real HTTP
server (uvicorn, as `cityhall serve` runs it), with the staff token where `cityhall up` keeps
it (<CITYHALL_HOME>/applications/staff.token)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from nats.js import JetStreamContext
from typer.testing import CliRunner, Result

from cityhall.cli import app
from services.registry import definition
from services.runtime.server import build_app, http_server_config
from tests.conftest import make_settings
from tests.integration.helpers import provision, publish_envelope, wait_for
from tests.integration.notifications.conftest import OPERATOR_TOKEN, RecordingSmtp
from tests.integration.notifications.test_email_delivery import submitted_by

pytestmark = pytest.mark.usefixtures("notify_env")


@contextlib.asynccontextmanager
async def served(settings: Any) -> AsyncIterator[str]:
    server = uvicorn.Server(
        http_server_config(build_app(definition("notifications"), settings), settings)
    )
    server.config.loop = "asyncio"  # this test's own event loop
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: asyncio.sleep(0, server.started), timeout=30)
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def cityhall(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, ["notifications", *args])


async def test_the_operator_lists_a_failed_mail_resends_it_and_sees_a_repeat_refused(
    nats_url: str,
    database_url: str,
    namespace: str,
    nc: Any,
    db: Any,
    js: JetStreamContext,
    smtp: RecordingSmtp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFICATIONS_STAFF_TOKENS", f"ops01={OPERATOR_TOKEN}")
    (tmp_path / "applications").mkdir()
    (tmp_path / "applications" / "staff.token").write_text(OPERATOR_TOKEN + "\n")
    monkeypatch.setenv("CITYHALL_HOME", str(tmp_path))
    monkeypatch.delenv("CITYHALL_STAFF_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich: no folded ids in the table
    await provision(nc.jetstream(), namespace)
    settings = make_settings("notifications", nats_url, database_url, namespace)
    async with (
        served(settings) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        ) as http,
    ):
        monkeypatch.setenv("CITYHALL_NOTIFICATIONS_URL", url)
        for command in ("failed", "pending"):
            empty = await cityhall(command, "--json")
            assert (empty.exit_code, empty.stdout.strip()) == (0, "[]"), empty.output

        applicant = uuid.uuid4()
        await http.put(f"/contacts/{applicant}", json={"email": "hanako@exmaple.jp"})
        smtp.refuse_with = "550 5.1.1 mailbox unavailable"
        await publish_envelope(js, namespace, submitted_by(applicant))

        async def listed() -> list[Any]:
            result = await cityhall("failed", "--json")
            assert result.exit_code == 0, result.output
            return list(json.loads(result.stdout))

        [item] = await wait_for(listed)
        table = await cityhall("failed")
        assert table.exit_code == 0, table.output
        for shown in (item["id"], "h****@exmaple.jp", "550", "JST", "1 of 1"):
            assert shown in table.stdout, (shown, table.stdout)

        smtp.refuse_with = None
        await http.put(f"/contacts/{applicant}", json={"email": "hanako@example.jp"})
        done = await cityhall("resend", item["id"])
        assert done.exit_code == 0, done.output
        assert "h****@example.jp (a corrected address), asked by ops01" in done.stdout
        await wait_for(lambda: asyncio.sleep(0, len(smtp.messages) == 1))
        await asyncio.sleep(0.5)
        [mail] = smtp.messages
        assert mail["To"] == "hanako@example.jp"

        async def delivered() -> bool:
            return (await http.get(f"/notifications/{item['id']}")).json()["status"] == "sent"

        await wait_for(delivered)
        repeat = await cityhall("resend", item["id"])
        assert repeat.exit_code == 1
        assert "refused (409): AlreadyDelivered" in repeat.output
        unknown = await cityhall("resend", str(uuid.uuid4()))
        assert (unknown.exit_code, "refused (404)" in unknown.output) == (1, True)
        bad = await cityhall("failed", "--kind", "gossip")
        assert bad.exit_code == 1
        assert "refused (422): kind:" in bad.output
        assert (await cityhall("resend", "not-an-id")).exit_code == 2
        assert (await cityhall("failed", "--json")).stdout.strip() == "[]"
    assert len(smtp.messages) == 1
