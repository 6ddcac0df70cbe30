"""Fees (手数料): asking for a fee-bearing application's fee tells payments, PaymentCaptured
moves it to paid (once), and nothing is reviewed or approved unpaid."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext

from contracts.applications import ApplicationPaidV1, ApplicationPaymentRequestedV1
from contracts.envelope import Envelope
from contracts.payments import (
    PaymentAttachedV1,
    PaymentCapturedV1,
    PaymentChannel,
    PaymentMethod,
)
from contracts.subjects import APPLICATIONS
from tests.integration.applications.conftest import STAFF
from tests.integration.helpers import publish_envelope, wait_for
from tests.tokens import applicant, applicant_id_of

CITIZEN = applicant()


def captured(application_id: str | None, amount_yen: int = 300) -> Envelope[PaymentCapturedV1]:
    data = PaymentCapturedV1(
        payment_id=uuid.uuid4(),
        facility_code="shiminka",
        channel=PaymentChannel.ONLINE,
        method=PaymentMethod.QR,
        brand="PayPay",
        amount_yen=amount_yen,
        item="住民票の写し",
        occurred_at=datetime.now(UTC),
        receipt_number="shiminka-2026-000001",
        application_id=uuid.UUID(application_id) if application_id else None,
    )
    return Envelope.new(data, source="/cityhall/payments")


async def events_of(js: JetStreamContext, namespace: str, ce_type: str) -> list[dict[str, Any]]:
    stream = APPLICATIONS.stream_name(namespace)
    info = await js.stream_info(stream)
    found = []
    for seq in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq=seq)
        if msg.headers and msg.headers["ce-type"] == ce_type:
            found.append(json.loads(msg.data or b"{}"))
    return found


async def status_of(applications: Any, app_id: str) -> str:
    body = (await applications.http.get(f"/applications/{app_id}", headers=STAFF)).json()
    return str(body["status"])


async def submit_and_ask_fee(applications: Any, body: dict[str, Any]) -> dict[str, Any]:
    http = applications.http
    online = body.get("channel", "online") == "online"
    resp = await http.post("/applications", json=body, headers=CITIZEN if online else STAFF)
    assert resp.status_code == 201, resp.text
    app: dict[str, Any] = resp.json()
    if body.get("channel", "online") == "online":
        assert app["status"] == "awaiting_payment"  # online: the fee is asked for at once
        return app
    assert app["status"] == "submitted"  # counter and mail: staff ask when the applicant pays
    resp = await http.post(f"/applications/{app['id']}/fee-request", headers=STAFF)
    assert resp.status_code == 200, resp.text
    app = resp.json()
    assert app["status"] == "awaiting_payment"
    return app


async def test_a_certificate_fee_is_requested_from_payments(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    body = {"procedure_code": "JUMINHYO", "form": {"copies": 2}}
    app = await submit_and_ask_fee(applications, body)
    assert (app["status"], app["fee_yen"]) == ("awaiting_payment", 300)

    async def requested() -> list[dict[str, Any]]:
        return await events_of(js, namespace, ApplicationPaymentRequestedV1.event_type)

    [request] = await wait_for(requested)
    assert request["application_id"] == app["id"]
    assert (request["amount_yen"], request["facility_code"]) == (300, "shiminka")
    assert request["applicant_id"] == applicant_id_of(CITIZEN)


async def test_payment_captured_moves_the_application_to_paid_once(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    body = {"procedure_code": "KOSEKI_TOHON", "channel": "counter", "form": _koseki()}
    app = await submit_and_ask_fee(applications, body)
    assert app["fee_yen"] == 450
    capture = captured(app["id"], 450)
    await publish_envelope(js, namespace, capture)
    await publish_envelope(js, namespace, capture, msg_id="redelivered-copy")

    async def paid() -> bool:
        return await status_of(applications, app["id"]) == "paid"

    await wait_for(paid)

    async def paid_events() -> list[dict[str, Any]]:
        return await events_of(js, namespace, ApplicationPaidV1.event_type)

    [event] = await wait_for(paid_events)
    assert event["payment_id"] == str(capture.data.payment_id)
    consumer = applications.ctx.consumers[0]
    await wait_for(lambda: _true(consumer.stats.duplicates == 1))
    assert len(await events_of(js, namespace, ApplicationPaidV1.event_type)) == 1


async def _true(value: bool) -> bool:
    return value


async def test_a_capture_for_an_application_not_awaiting_payment_changes_nothing(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    http = applications.http
    app = await submit_and_ask_fee(applications, {"procedure_code": "JUMINHYO"})
    await http.post(f"/applications/{app['id']}/withdraw", headers=STAFF)
    unknown = captured(str(uuid.uuid4()))
    late = captured(app["id"])
    for env in (unknown, late):
        await publish_envelope(js, namespace, env)
    consumer = applications.ctx.consumers[0]
    await wait_for(lambda: _true(consumer.stats.processed == 2))
    assert await status_of(applications, app["id"]) == "withdrawn"
    assert await events_of(js, namespace, ApplicationPaidV1.event_type) == []
    assert consumer.stats.dead_lettered == 0


async def test_nothing_is_reviewed_or_approved_unpaid(applications: Any) -> None:
    http = applications.http
    body = {"procedure_code": "JUMINHYO", "channel": "counter"}
    app = (await http.post("/applications", json=body, headers=STAFF)).json()
    url = f"/applications/{app['id']}"
    resp = await http.post(f"{url}/review", headers=STAFF)
    assert resp.status_code == 409
    assert "300 yen is not paid" in resp.json()["detail"]
    await http.post(f"{url}/fee-request", headers=STAFF)
    resp = await http.post(f"{url}/review", headers=STAFF)
    assert resp.status_code == 409
    assert "is awaiting_payment: cannot start review" in resp.json()["detail"]
    assert (await http.post(f"{url}/approve", headers=STAFF)).status_code == 409
    assert await status_of(applications, app["id"]) == "awaiting_payment"


async def test_a_fee_free_procedure_has_no_fee_to_ask(applications: Any) -> None:
    http = applications.http
    body = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "a", "body": "b"}}
    app = (await http.post("/applications", json=body)).json()
    resp = await http.post(f"/applications/{app['id']}/fee-request", headers=STAFF)
    assert resp.status_code == 409
    assert "has no fee" in resp.json()["detail"]


async def test_a_paid_certificate_is_reviewed_approved_and_issued(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    http = applications.http
    app = await submit_and_ask_fee(applications, {"procedure_code": "JUMINHYO"})
    await publish_envelope(js, namespace, captured(app["id"]))

    async def paid() -> bool:
        return await status_of(applications, app["id"]) == "paid"

    await wait_for(paid)
    url = f"/applications/{app['id']}"
    assert (await http.post(f"{url}/review", headers=STAFF)).status_code == 200
    assert (await http.post(f"{url}/approve", headers=STAFF)).status_code == 200
    resp = await http.post(f"{url}/certificate", headers=STAFF)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "certificate_issued"
    assert body["certificate_number"].startswith("072036-")
    assert (await http.post(f"{url}/certificate", headers=STAFF)).status_code == 409


def _koseki() -> dict[str, str]:
    return {"honseki": "郡山市朝日一丁目23番", "hittosha": "郡山太郎"}


def attached(application_id: str, payment_id: uuid.UUID, amount_yen: int = 300) -> Envelope[Any]:
    data = PaymentAttachedV1(
        payment_id=payment_id,
        request_id=uuid.uuid4(),
        application_id=uuid.UUID(application_id),
        reference="PR-7KQ2M9XW4T",
        amount_yen=amount_yen,
        attached_at=datetime.now(UTC),
    )
    return Envelope.new(data, source="/cityhall/payments")


async def test_a_late_payment_moves_the_application_to_paid_only_when_staff_attach_it(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    app = await submit_and_ask_fee(applications, {"procedure_code": "JUMINHYO"})
    # Paid after its request expired: payments captures it for no application and holds it.
    held = captured(None)
    await publish_envelope(js, namespace, held)
    consumer = applications.ctx.consumers[0]
    await wait_for(lambda: _true(consumer.stats.processed == 1))
    assert await status_of(applications, app["id"]) == "awaiting_payment"

    await publish_envelope(js, namespace, attached(app["id"], held.data.payment_id))

    async def paid() -> bool:
        return await status_of(applications, app["id"]) == "paid"

    await wait_for(paid)
    [event] = await events_of(js, namespace, ApplicationPaidV1.event_type)
    assert (event["payment_id"], event["amount_yen"]) == (str(held.data.payment_id), 300)


async def test_a_payment_attached_to_a_withdrawn_application_changes_nothing(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    app = await submit_and_ask_fee(applications, {"procedure_code": "JUMINHYO"})
    await applications.http.post(f"/applications/{app['id']}/withdraw", headers=STAFF)
    await publish_envelope(js, namespace, attached(app["id"], uuid.uuid4()))
    consumer = applications.ctx.consumers[0]
    await wait_for(lambda: _true(consumer.stats.processed == 1))
    assert await status_of(applications, app["id"]) == "withdrawn"
    assert await events_of(js, namespace, ApplicationPaidV1.event_type) == []
    assert consumer.stats.dead_lettered == 0
