"""Signed webhooks to other city systems: a receiver verifies the signature and refuses a
replayed timestamp; a 4xx answer is final, a 5xx answer is retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.applications import ApplicationSubmittedV1, Channel
from contracts.envelope import Envelope
from contracts.notifications import NotificationFailedV1, NotificationSentV1
from services.notifications.channels import SIGNATURE_HEADER, SignatureRefused, verify_signature
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.notifications.conftest import notification_events, write_rules

SECRET = b"test-secret"
TOLERANCE_S = 1.0
"""The receiver's tolerance when the test checks a replay (30 s before, so a loaded machine
cannot turn the tampered-body check into a replay refusal)."""


class Receiver:
    """A city system receiving cityhall's webhooks: it checks every request's signature."""

    def __init__(self) -> None:
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[str] = []
        self.answer_status: int | None = None
        self.tolerance_s = 30.0
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k: v for k, v in self.headers.items()}
                if receiver.answer_status is not None:
                    self._reply(receiver.answer_status, {"error": "not today"})
                    return
                try:
                    verify_signature(
                        SECRET,
                        self.headers.get(SIGNATURE_HEADER),
                        body,
                        tolerance_s=receiver.tolerance_s,
                    )
                except SignatureRefused as exc:
                    receiver.refused.append(str(exc))
                    self._reply(401, {"error": str(exc)})
                    return
                receiver.accepted.append((headers, body))
                self._reply(200, {"id": f"rcv-{len(receiver.accepted)}"})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cityhall-hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def webhook_rules(
    notify_env: pytest.MonkeyPatch, tmp_path: Path, receiver: Receiver
) -> pytest.MonkeyPatch:
    """Rules as data: submitted applications are announced to the registry system's webhook."""
    rules = write_rules(
        tmp_path,
        [
            {
                "id": "registry-announcement",
                "event": "ApplicationSubmitted.v1",
                "to": "staff:registry_system",
                "kind": "staff_alert",
                "template": "application_submitted",
            }
        ],
    )
    notify_env.setenv("NOTIFY_RULES_FILE", str(rules))
    notify_env.setenv("NOTIFY_STAFF", json.dumps({"registry_system": [receiver.url]}))
    return notify_env


def submitted() -> Envelope[Any]:
    data = ApplicationSubmittedV1(
        application_id=uuid.uuid4(),
        procedure_code="JUMINHYO",
        channel=Channel.COUNTER,
        submitted_at=datetime.now(UTC),
    )
    return Envelope.new(data, source="/cityhall/applications")


@pytest.mark.usefixtures("webhook_rules")
async def test_a_receiver_verifies_the_signature_and_refuses_a_replayed_timestamp(
    start_service: Any, receiver: Receiver, js: JetStreamContext, namespace: str
) -> None:
    await start_service("notifications")
    env = submitted()
    await publish_envelope(js, namespace, env)

    async def sent() -> list[NotificationSentV1]:
        return [
            e
            for _, e in await notification_events(js, namespace)
            if isinstance(e, NotificationSentV1)
        ]

    [event] = await wait_for(sent)
    [(headers, body)] = receiver.accepted
    assert event.provider_message_id == "rcv-1"
    assert event.channel.value == "webhook"
    payload = json.loads(body)
    assert payload["cause_event_id"] == env.id
    assert payload["rule"] == "registry-announcement"
    assert "申請を受け付けました" in payload["subject"]

    # The signature, checked independently: HMAC-SHA256 over "<t>." + body.
    fields = dict(p.split("=", 1) for p in headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(SECRET, f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)

    async with httpx.AsyncClient() as client:
        tampered = await client.post(
            receiver.url, content=body.replace(b"JUMINHYO", b"KOSEKI00"), headers=headers
        )
        assert tampered.status_code == 401
        assert "does not match" in tampered.json()["error"]
        receiver.tolerance_s = TOLERANCE_S
        age = time.time() - int(fields["t"])
        await asyncio.sleep(max(0.0, TOLERANCE_S + 1.1 - age))
        replayed = await client.post(receiver.url, content=body, headers=headers)
    assert replayed.status_code == 401
    assert "replay" in replayed.json()["error"]
    assert len(receiver.accepted) == 1


@pytest.mark.usefixtures("webhook_rules")
async def test_a_webhook_answering_4xx_is_not_retried_and_ends_as_notification_failed(
    start_service: Any, receiver: Receiver, js: JetStreamContext, namespace: str
) -> None:
    receiver.answer_status = 410
    await start_service("notifications")
    await publish_envelope(js, namespace, submitted())

    async def failed() -> list[NotificationFailedV1]:
        return [
            e
            for _, e in await notification_events(js, namespace)
            if isinstance(e, NotificationFailedV1)
        ]

    [event] = await wait_for(failed)
    assert event.permanent is True
    assert event.attempts == 1
    assert "410" in event.reason


@pytest.mark.usefixtures("webhook_rules")
async def test_a_webhook_answering_5xx_is_retried_until_it_accepts(
    start_service: Any, receiver: Receiver, js: JetStreamContext, namespace: str
) -> None:
    receiver.answer_status = 503
    svc = await start_service("notifications")
    await publish_envelope(js, namespace, submitted())

    async def retried() -> bool:
        return bool(await svc.pool.fetchval("SELECT max(attempts) >= 3 FROM notifications"))

    await wait_for(retried)
    receiver.answer_status = None

    async def sent() -> bool:
        return await svc.pool.fetchval("SELECT status FROM notifications") == "sent"

    await wait_for(sent)
    assert len(receiver.accepted) == 1
