"""Fixtures for the notifications tests: a real SMTP server (aiosmtpd) the test can stop,
start again or make refuse mail, and the service started with settings pointing at it."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from cityhall.embedded import free_port
from contracts import EVENT_TYPES
from contracts.envelope import Event, RawEvent
from contracts.subjects import NOTIFICATIONS


class RecordingSmtp:
    """An SMTP server that keeps every message it accepts (or answers ``refuse_with``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self.refuse_with: str | None = None
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_with is not None:
            return self.refuse_with
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 2.0.0 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def notification_ids(self) -> list[str]:
        return [str(m["X-Cityhall-Notification-Id"]) for m in self.messages]


@pytest.fixture
def smtp() -> Iterator[RecordingSmtp]:
    server = RecordingSmtp(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch, smtp: RecordingSmtp) -> pytest.MonkeyPatch:
    """NOTIFY_* settings for fast tests: short back-off, quick polling, the test's SMTP."""
    values = {
        "NOTIFY_SMTP_HOST": "127.0.0.1",
        "NOTIFY_SMTP_PORT": str(smtp.port),
        "NOTIFY_SMTP_TIMEOUT_S": "2",
        "NOTIFY_BACKOFF_BASE_S": "0.05",
        "NOTIFY_BACKOFF_MAX_S": "0.3",
        "NOTIFY_MAX_ATTEMPTS": "60",
        "NOTIFY_SENDER_POLL_S": "0.05",
        "NOTIFY_EMAIL_RATE_PER_S": "500",
        "NOTIFY_WEBHOOK_SECRET": "test-secret",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def write_rules(tmp_path: Path, rules: list[dict[str, Any]]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps({"rules": rules}), "utf-8")  # JSON is YAML too
    return path


async def notification_events(js: JetStreamContext, namespace: str) -> list[tuple[str, Event]]:
    """Every event on the notifications stream, with its CloudEvents id, in order."""
    stream = NOTIFICATIONS.stream_name(namespace)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    found: list[tuple[str, Event]] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if seq == 0:
            continue
        raw = await js.get_msg(stream, seq=seq, direct=True)
        ce = RawEvent.from_headers(raw.headers)
        env = ce.parse(EVENT_TYPES[ce.type], raw.data or b"")
        found.append((env.id, env.data))
    return found


def new_applicant() -> uuid.UUID:
    return uuid.uuid4()


OPERATOR_TOKEN = "notify-operator-token-0001"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@pytest.fixture
def start_service(start_service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's ``start_service``, with clients that send an operator's (staff) credential:
    the operator routes and contacts need one (tests/security checks who else may call)."""
    monkeypatch.setenv("NOTIFICATIONS_STAFF_TOKENS", f"ops01={OPERATOR_TOKEN}")

    async def start(name: str, **overrides: Any) -> Any:
        running = await start_service(name, **overrides)
        if name == "notifications":
            running.http.headers.update(OPERATOR)
        return running

    return start
