"""Failures operators can act on, on real SMTP, NATS JetStream and PostgreSQL: a dead delivery
is listed with its reason; once the contact is corrected a resend delivers it once, to the
current address; a resend waiting for a retry shows as pending; repeats and bad input are
refused clearly."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.notifications import (
    NotificationFailedV1,
    NotificationResendRequestedV1,
    NotificationSentV1,
)
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.notifications.conftest import (
    RecordingSmtp,
    notification_events,
    write_rules,
)
from tests.integration.notifications.test_email_delivery import register, submitted_by
from tests.integration.notifications.test_webhooks import Receiver, submitted

pytestmark = pytest.mark.usefixtures("notify_env")

REFUSED = "550 5.1.1 mailbox unavailable"


async def failed_list(svc: Any, **params: Any) -> list[dict[str, Any]]:
    answer = await svc.http.get("/notifications/failed", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def dead_one(svc: Any, smtp: RecordingSmtp, js: Any, namespace: str, email: str) -> Any:
    """An applicant whose acknowledgement the SMTP server refused for good (550)."""
    applicant = await register(svc, email)
    smtp.refuse_with = REFUSED
    env = submitted_by(applicant)
    await publish_envelope(js, namespace, env)
    [item] = await wait_for(lambda: failed_list(svc))
    return applicant, env, item


async def test_a_dead_mail_is_listed_then_resent_once_to_the_corrected_address(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicant, env, item = await dead_one(svc, smtp, js, namespace, "hanako@exmaple.jp")
    assert item["status"] == "dead"
    assert item["kind"] == "application_status"
    assert item["channel"] == "email"
    assert item["recipient"] == "h****@exmaple.jp"
    assert item["applicant_id"] == str(applicant)
    assert "550" in item["reason"]
    assert item["attempts"] == 1
    assert item["cause_event_id"] == env.id
    assert item["cause_event"] == "ApplicationSubmitted.v1"
    first = datetime.fromisoformat(item["first_attempt_at"])
    assert first.tzinfo is not None
    assert first <= datetime.fromisoformat(item["failed_at"])
    assert item["next_attempt_at"] is None

    # The operator corrects the address, then sends it again.
    smtp.refuse_with = None
    fixed = await svc.http.put(f"/contacts/{applicant}", json={"email": "hanako@example.jp"})
    assert fixed.status_code == 200
    answer = await svc.http.post(f"/notifications/{item['id']}/resend")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["resend"]["requested_by"] == "ops01"
    assert body["resend"]["address"] == "h****@example.jp"
    assert body["resend"]["address_changed"] is True
    assert body["resend"]["previous_attempts"] == 1
    assert body["notification"]["status"] == "pending"
    assert body["notification"]["attempts"] == 0

    async def sent() -> bool:
        row = await svc.http.get(f"/notifications/{item['id']}")
        return bool(row.json()["status"] == "sent")

    await wait_for(sent)
    await asyncio.sleep(0.5)  # time for a wrong second mail to show up
    [mail] = smtp.messages
    assert mail["To"] == "hanako@example.jp"
    assert mail["Message-ID"] == f"<{uuid.UUID(item['id']).hex}@cityhall.koriyama>"
    assert await failed_list(svc) == []

    again = await svc.http.post(f"/notifications/{item['id']}/resend")
    assert again.status_code == 409
    assert again.json()["detail"]["error"] == "AlreadyDelivered"
    [record] = (await svc.http.get(f"/notifications/{item['id']}/resends")).json()
    assert record["address"] == "h****@example.jp"
    assert record["previous_error"].startswith("permanent: ")

    events = [e for _, e in await notification_events(js, namespace)]
    assert [type(e) for e in events] == [
        NotificationFailedV1,
        NotificationResendRequestedV1,
        NotificationSentV1,
    ]
    requested = events[1]
    assert isinstance(requested, NotificationResendRequestedV1)
    assert (requested.requested_by, requested.address_changed) == ("ops01", True)
    assert "example" not in requested.model_dump_json()  # no address on the bus


async def test_a_resend_meeting_a_temporary_refusal_waits_as_pending_with_its_next_attempt(
    start_service: Any,
    smtp: RecordingSmtp,
    js: JetStreamContext,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_BACKOFF_BASE_S", "60")
    monkeypatch.setenv("NOTIFY_BACKOFF_MAX_S", "120")
    svc = await start_service("notifications")
    _, _, item = await dead_one(svc, smtp, js, namespace, "jiro@example.jp")
    smtp.refuse_with = "451 4.3.0 try again later"
    assert (await svc.http.post(f"/notifications/{item['id']}/resend")).status_code == 202

    async def retrying() -> list[dict[str, Any]]:
        page = (await svc.http.get("/notifications/pending")).json()
        return [i for i in page["items"] if i["status"] == "failed"]

    [waiting] = await wait_for(retrying)
    assert waiting["id"] == item["id"]
    assert waiting["attempts"] == 1
    assert "451" in waiting["reason"]
    next_at = datetime.fromisoformat(waiting["next_attempt_at"])
    assert next_at > datetime.now(UTC) + timedelta(seconds=20)  # 60 s x 50-100 % jitter
    assert waiting["resends"] == 1
    assert await failed_list(svc) == []

    again = await svc.http.post(f"/notifications/{item['id']}/resend")
    assert again.status_code == 409
    assert again.json()["detail"]["error"] == "AlreadyPending"
    empty = await svc.http.get("/notifications/pending", params={"channel": "webhook"})
    assert empty.json() == {"items": [], "total": 0, "limit": 100, "offset": 0}


async def test_filters_pages_and_bad_input(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    for name in ("a", "b", "c"):
        applicant = await register(svc, f"{name}@example.jp")
        smtp.refuse_with = REFUSED
        await publish_envelope(js, namespace, submitted_by(applicant))

    async def three() -> bool:
        return len(await failed_list(svc)) == 3

    await wait_for(three)
    newest = await failed_list(svc)
    failed_at = [i["failed_at"] for i in newest]
    assert failed_at == sorted(failed_at, reverse=True)
    page = (await svc.http.get("/notifications/failed", params={"limit": 2, "offset": 2})).json()
    assert (page["total"], [i["id"] for i in page["items"]]) == (3, [newest[2]["id"]])
    assert await failed_list(svc, kind="payment") == []
    assert len(await failed_list(svc, kind="application_status", channel="email")) == 3
    assert await failed_list(svc, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []

    for params, field in (
        ({"kind": "gossip"}, "kind"),
        ({"channel": "fax"}, "channel"),
        ({"since": "2026-11-24T09:00:00"}, "since"),  # no offset: which time zone?
        ({"since": "yesterday"}, "since"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),  # no such time in UTC
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        bad = await svc.http.get("/notifications/failed", params=params)
        assert bad.status_code == 422, params
        assert bad.json()["detail"][0]["loc"] == ["query", field], params
    unknown = uuid.uuid4()
    assert (await svc.http.post(f"/notifications/{unknown}/resend")).status_code == 404
    assert (await svc.http.get(f"/notifications/{unknown}/resends")).status_code == 404
    assert (await svc.http.post("/notifications/not-a-uuid/resend")).status_code == 422


async def test_no_resend_to_a_contact_deleted_or_opted_out(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicant, _, item = await dead_one(svc, smtp, js, namespace, "saburo@example.jp")
    smtp.refuse_with = None
    await svc.http.put(
        f"/contacts/{applicant}",
        json={"email": "saburo@example.jp", "opt_outs": ["application_status"]},
    )
    opted_out = await svc.http.post(f"/notifications/{item['id']}/resend")
    assert opted_out.status_code == 409
    assert opted_out.json()["detail"]["error"] == "NoCurrentAddress"
    assert "opted out" in opted_out.json()["detail"]["message"]
    await svc.http.delete(f"/contacts/{applicant}")
    gone = await svc.http.post(f"/notifications/{item['id']}/resend")
    assert gone.status_code == 409
    assert "no contact" in gone.json()["detail"]["message"]
    assert [i["id"] for i in await failed_list(svc)] == [item["id"]]  # still there, untouched
    assert smtp.messages == []


async def test_a_webhook_refused_for_good_is_resent_once_the_receiver_takes_it(
    start_service: Any,
    js: JetStreamContext,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    receiver.thread.start()
    try:
        rule = {
            "id": "registry-announcement",
            "event": "ApplicationSubmitted.v1",
            "to": "staff:registry_system",
            "kind": "staff_alert",
            "template": "application_submitted",
        }
        monkeypatch.setenv("NOTIFY_RULES_FILE", str(write_rules(tmp_path, [rule])))
        monkeypatch.setenv("NOTIFY_STAFF", json.dumps({"registry_system": [receiver.url]}))
        receiver.answer_status = 410
        svc = await start_service("notifications")
        await publish_envelope(js, namespace, submitted())
        [item] = await wait_for(lambda: failed_list(svc, channel="webhook"))
        assert (item["recipient_kind"], item["applicant_id"]) == ("staff", None)
        assert item["recipient"] == f"http://127.0.0.1:{receiver.port}/…"
        assert "410" in item["reason"]
        receiver.answer_status = None
        answer = await svc.http.post(f"/notifications/{item['id']}/resend")
        assert answer.status_code == 202, answer.text
        assert answer.json()["resend"]["address_changed"] is False
        await wait_for(lambda: asyncio.sleep(0, len(receiver.accepted) == 1))
        await asyncio.sleep(0.5)
        assert len(receiver.accepted) == 1
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
