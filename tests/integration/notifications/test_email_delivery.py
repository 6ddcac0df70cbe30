"""E-mail notifications on real SMTP (aiosmtpd), NATS JetStream and PostgreSQL: exactly once,
through redeliveries and an SMTP outage; a permanent refusal ends as NotificationFailed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.applications import ApplicationSubmittedV1, Channel
from contracts.envelope import Envelope, Event
from contracts.notifications import NotificationFailedV1, NotificationSentV1
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.notifications.conftest import RecordingSmtp, notification_events

pytestmark = pytest.mark.usefixtures("notify_env")


def submitted_by(applicant_id: uuid.UUID, procedure: str = "JUMINHYO") -> Envelope[Event]:
    data = ApplicationSubmittedV1(
        application_id=uuid.uuid4(),
        procedure_code=procedure,
        channel=Channel.ONLINE,
        submitted_at=datetime.now(UTC),
        applicant_id=applicant_id,
    )
    return Envelope.new(data, source="/cityhall/applications")


async def register(svc: Any, email: str, **extra: Any) -> uuid.UUID:
    applicant = uuid.uuid4()
    response = await svc.http.put(f"/contacts/{applicant}", json={"email": email, **extra})
    assert response.status_code == 200, response.text
    return applicant


async def statuses(svc: Any) -> dict[str, int]:
    rows = await svc.pool.fetch("SELECT status, count(*) AS n FROM notifications GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_the_same_event_delivered_three_times_sends_one_mail(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicant = await register(svc, "taro.koriyama@example.jp")
    env = submitted_by(applicant)
    # Three copies with different Nats-Msg-Ids: JetStream stores and delivers all three.
    for copy in range(3):
        await publish_envelope(js, namespace, env, msg_id=f"copy-{copy}")

    async def sent_event() -> list[NotificationSentV1]:
        return [
            e
            for _, e in await notification_events(js, namespace)
            if isinstance(e, NotificationSentV1)
        ]

    [sent] = await wait_for(sent_event)
    await asyncio.sleep(0.5)  # time for a wrong second mail to show up
    [mail] = smtp.messages
    assert mail["To"] == "taro.koriyama@example.jp"
    assert "申請を受け付けました" in str(mail["Subject"])
    assert sent.provider_message_id == mail["Message-ID"]
    assert sent.cause_event_id == env.id
    assert sent.rule == "application-acknowledgement"
    assert await statuses(svc) == {"sent": 1}
    assert len(await sent_event()) == 1


async def test_an_smtp_outage_during_a_burst_ends_with_every_mail_sent_once(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicants = [await register(svc, f"citizen{i}@example.jp") for i in range(5)]
    smtp.stop()
    burst = [submitted_by(applicants[i % 5]) for i in range(40)]
    for env in burst:
        await publish_envelope(js, namespace, env)

    async def all_failed_at_least_once() -> bool:
        return (await statuses(svc)).get("failed", 0) == 40

    await wait_for(all_failed_at_least_once, timeout=20)
    retried = await svc.pool.fetchval("SELECT min(attempts) FROM notifications")
    assert retried >= 1
    smtp.start()

    async def all_sent() -> bool:
        return (await statuses(svc)) == {"sent": 40}

    await wait_for(all_sent, timeout=30)
    await asyncio.sleep(0.5)
    ids = smtp.notification_ids()
    assert len(ids) == 40
    assert len(set(ids)) == 40
    stored = {str(r["id"]) for r in await svc.pool.fetch("SELECT id FROM notifications")}
    assert set(ids) == stored
    events = [e for _, e in await notification_events(js, namespace)]
    assert sum(isinstance(e, NotificationSentV1) for e in events) == 40
    assert not any(isinstance(e, NotificationFailedV1) for e in events)


async def test_a_permanent_refusal_ends_as_notification_failed_and_in_the_operators_list(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicant = await register(svc, "hanako@example.jp")
    smtp.refuse_with = "550 5.1.1 mailbox unavailable"
    env = submitted_by(applicant)
    await publish_envelope(js, namespace, env)

    async def failed_event() -> list[NotificationFailedV1]:
        return [
            e
            for _, e in await notification_events(js, namespace)
            if isinstance(e, NotificationFailedV1)
        ]

    [failed] = await wait_for(failed_event)
    assert failed.permanent is True
    assert failed.attempts == 1
    assert "550" in failed.reason
    assert failed.cause_event_id == env.id
    assert smtp.messages == []
    listed = (await svc.http.get("/notifications")).json()
    assert [(n["status"], n["rule"], n["address"]) for n in listed] == [
        ("dead", "application-acknowledgement", "h****@example.jp")
    ]


async def test_a_temporary_refusal_is_retried_until_the_server_accepts(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicant = await register(svc, "jiro@example.jp")
    smtp.refuse_with = "451 4.3.0 try again later"
    await publish_envelope(js, namespace, submitted_by(applicant))

    async def retried_twice() -> bool:
        attempts = await svc.pool.fetchval("SELECT max(attempts) FROM notifications")
        return attempts is not None and attempts >= 2

    await wait_for(retried_twice)
    listed = (await svc.http.get("/notifications", params={"status": "failed"})).json()
    assert listed
    assert "451" in listed[0]["last_error"]
    smtp.refuse_with = None

    async def sent() -> bool:
        return (await statuses(svc)) == {"sent": 1}

    await wait_for(sent)
    assert len(smtp.messages) == 1


async def test_an_applicant_who_opted_out_of_a_kind_gets_none_of_it(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    quiet = await register(svc, "quiet@example.jp", opt_outs=["application_status"])
    english = await register(svc, "anna@example.jp", language="en")
    await publish_envelope(js, namespace, submitted_by(quiet))
    await publish_envelope(js, namespace, submitted_by(english))

    async def one_mail() -> bool:
        return len(smtp.messages) == 1

    await wait_for(one_mail)
    await asyncio.sleep(0.5)
    [mail] = smtp.messages
    assert mail["To"] == "anna@example.jp"
    assert str(mail["Subject"]).startswith("[Koriyama City] We received your application")
    assert await svc.pool.fetchval("SELECT count(*) FROM notifications") == 1


async def test_two_senders_on_one_database_send_each_notification_once(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    """Replicas share the work: SKIP LOCKED hands each due row to one sender."""
    from services.notifications.components import components
    from services.notifications.sender import Sender

    svc = await start_service("notifications")
    parts = components(svc.ctx)
    second = Sender(svc.pool, parts.notifier, parts.channels)
    first = parts.sender
    assert first is not None
    applicant = await register(svc, "shared@example.jp")
    smtp.stop()  # let the rows pile up, then both senders race for them
    for _ in range(60):
        await publish_envelope(js, namespace, submitted_by(applicant))

    async def all_waiting() -> bool:
        return await svc.pool.fetchval("SELECT count(*) FROM notifications") == 60

    await wait_for(all_waiting)
    smtp.start()
    racer = asyncio.create_task(second.run())
    try:

        async def all_sent() -> bool:
            return (await statuses(svc)) == {"sent": 60}

        await wait_for(all_sent, timeout=30)
    finally:
        racer.cancel()
    await asyncio.sleep(0.3)
    assert sorted(smtp.notification_ids()) == sorted(set(smtp.notification_ids()))
    assert len(smtp.messages) == 60
    assert first.stats.sent + second.stats.sent == 60
