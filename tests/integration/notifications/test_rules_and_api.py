"""The contact directory, templates over HTTP, rules that reach the applicant through the
application id, the DLQ watch and the delivery-log retention."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.applications import (
    ApplicationPaymentRequestedV1,
    ApplicationSubmittedV1,
    CertificateIssuedV1,
    Channel,
)
from contracts.envelope import Envelope, Event
from contracts.payments import PaymentCapturedV1, PaymentChannel, PaymentMethod
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.notifications.conftest import RecordingSmtp

pytestmark = pytest.mark.usefixtures("notify_env")


def envelope(data: Event) -> Envelope[Event]:
    return Envelope.new(data, source="/cityhall/tests")


async def test_a_contact_is_put_read_and_deleted(start_service: Any) -> None:
    svc = await start_service("notifications")
    applicant = uuid.uuid4()
    body = {
        "email": "taro@example.jp",
        "phone": "0249241111",
        "language": "en",
        "opt_outs": ["payment"],
    }
    assert (await svc.http.put(f"/contacts/{applicant}", json=body)).status_code == 200
    got = (await svc.http.get(f"/contacts/{applicant}")).json()
    assert got == body
    assert (await svc.http.delete(f"/contacts/{applicant}")).status_code == 204
    assert (await svc.http.get(f"/contacts/{applicant}")).status_code == 404


async def test_a_contact_with_a_bad_field_is_refused_naming_it(start_service: Any) -> None:
    svc = await start_service("notifications")
    url = f"/contacts/{uuid.uuid4()}"
    bad_email = await svc.http.put(url, json={"email": "taro"})
    assert bad_email.status_code == 422
    assert bad_email.json()["detail"][0]["loc"] == ["body", "email"]
    bad_kind = await svc.http.put(url, json={"email": "t@example.jp", "opt_outs": ["spam"]})
    assert bad_kind.status_code == 422
    assert bad_kind.json()["detail"][0]["loc"][:2] == ["body", "opt_outs"]
    my_number = await svc.http.put(url, json={"email": "t@example.jp", "my_number": "1" * 12})
    assert my_number.status_code == 422


async def test_a_saved_template_becomes_the_next_active_version(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    shipped = (await svc.http.get("/templates/application_submitted/ja")).json()
    assert shipped["version"] == 0
    assert shipped["event"] == "ApplicationSubmitted.v1"
    parts = {
        "subject": "受付: {{ procedure_code }}",
        "text": "受付番号 {{ application_id }}",
        "html": "<p>受付番号 {{ application_id }}</p>",
    }
    saved = await svc.http.put("/templates/application_submitted/ja", json=parts)
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1
    again = await svc.http.put("/templates/application_submitted/ja", json=parts)
    assert again.json()["version"] == 2
    preview = (await svc.http.post("/templates/application_submitted/ja/preview")).json()
    assert preview["subject"] == "受付: JUMINHYO"
    assert preview["text"] == "受付番号 0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10"

    applicant = uuid.uuid4()
    await svc.http.put(f"/contacts/{applicant}", json={"email": "taro@example.jp"})
    await publish_envelope(
        js,
        namespace,
        envelope(
            ApplicationSubmittedV1(
                application_id=uuid.uuid4(),
                procedure_code="INKAN",
                channel=Channel.ONLINE,
                submitted_at=datetime.now(UTC),
                applicant_id=applicant,
            )
        ),
    )

    async def mailed() -> bool:
        return len(smtp.messages) == 1

    await wait_for(mailed)
    assert smtp.messages[0]["Subject"] == "受付: INKAN"
    version = await svc.pool.fetchval("SELECT template_version FROM notifications")
    assert version == 2


async def test_a_template_using_a_variable_the_event_lacks_is_refused_with_422(
    start_service: Any,
) -> None:
    svc = await start_service("notifications")
    parts = {
        "subject": "{{ procedure_code }}",
        "text": "{{ applicant_name }} 様",
        "html": "<p>{{ my_number }}</p>",
    }
    refused = await svc.http.put("/templates/application_submitted/en", json=parts)
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]
    assert problem["loc"] == ["body", "en", "text"]
    assert "applicant_name" in problem["msg"]
    assert (await svc.http.get("/templates/application_submitted/en")).json()["version"] == 0
    assert (await svc.http.get("/templates/no_such_template/ja")).status_code == 404


async def test_payment_and_certificate_reach_the_applicant_through_the_application(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    svc = await start_service("notifications")
    applicant, application = uuid.uuid4(), uuid.uuid4()
    await svc.http.put(f"/contacts/{applicant}", json={"email": "hanako@example.jp"})
    now = datetime.now(UTC)
    events = [
        ApplicationPaymentRequestedV1(
            application_id=application,
            procedure_code="JUMINHYO",
            amount_yen=300,
            fee_item="住民票の写し",
            facility_code="shiminka",
            requested_at=now,
            applicant_id=applicant,
        ),
        PaymentCapturedV1(
            payment_id=uuid.uuid4(),
            facility_code="shiminka",
            channel=PaymentChannel.ONLINE,
            method=PaymentMethod.CREDIT,
            brand="JCB",
            amount_yen=300,
            item="住民票の写し",
            occurred_at=now,
            receipt_number="shiminka-2026-000001",
            application_id=application,
        ),
        PaymentCapturedV1(  # paid at a terminal, no application: nobody to tell
            payment_id=uuid.uuid4(),
            facility_code="bijutsukan",
            channel=PaymentChannel.TERMINAL,
            method=PaymentMethod.QR,
            brand="PayPay",
            amount_yen=800,
            item="観覧料",
            occurred_at=now,
            receipt_number="bijutsukan-1",
        ),
        CertificateIssuedV1(
            application_id=application,
            procedure_code="JUMINHYO",
            occurred_at=now,
            certificate_number="072036-2026-0000001",
        ),
    ]
    for data in events:
        await publish_envelope(js, namespace, envelope(data))

    async def three_mails() -> bool:
        return len(smtp.messages) == 3

    await wait_for(three_mails)
    subjects = sorted(str(m["Subject"]) for m in smtp.messages)
    assert any("手数料のお支払いのお願い" in s for s in subjects)
    assert any("お支払いを確認しました（300円）" in s for s in subjects)
    assert any("証明書を発行しました" in s for s in subjects)
    rules = {r["rule"] for r in await svc.pool.fetch("SELECT rule FROM notifications")}
    assert rules == {"payment-instructions", "payment-confirmation", "certificate-ready"}


async def test_dead_letters_piling_up_past_the_threshold_tell_the_operators_once(
    start_service: Any,
    smtp: RecordingSmtp,
    js: JetStreamContext,
    namespace: str,
    notify_env: pytest.MonkeyPatch,
) -> None:
    notify_env.setenv("NOTIFY_DLQ_THRESHOLD", "3")
    notify_env.setenv("NOTIFY_DLQ_CHECK_S", "0.2")
    notify_env.setenv("NOTIFY_STAFF", json.dumps({"operators": ["mailto:ops@example.jp"]}))
    await start_service("notifications")
    for _ in range(4):
        bad = envelope(
            ApplicationSubmittedV1(
                application_id=uuid.uuid4(),
                procedure_code="JUMINHYO",
                channel=Channel.ONLINE,
                submitted_at=datetime.now(UTC),
            )
        )
        await publish_envelope(js, namespace, bad, body=b"{not json")

    async def operators_told() -> bool:
        return len(smtp.messages) == 1

    await wait_for(operators_told, timeout=15)
    [mail] = smtp.messages
    assert mail["To"] == "ops@example.jp"
    assert "デッドレター" in str(mail["Subject"])
    await asyncio.sleep(1.0)  # later checks see no new growth past the threshold
    assert len(smtp.messages) == 1


async def test_the_delivery_log_is_deleted_after_its_retention(
    start_service: Any,
    smtp: RecordingSmtp,
    js: JetStreamContext,
    namespace: str,
    notify_env: pytest.MonkeyPatch,
) -> None:
    notify_env.setenv("NOTIFY_RETENTION_DAYS", str(1 / 86400))  # one second
    notify_env.setenv("NOTIFY_RETENTION_CHECK_S", "0.2")
    svc = await start_service("notifications")
    applicant = uuid.uuid4()
    await svc.http.put(f"/contacts/{applicant}", json={"email": "taro@example.jp"})
    await publish_envelope(
        js,
        namespace,
        envelope(
            ApplicationSubmittedV1(
                application_id=uuid.uuid4(),
                procedure_code="JUMINHYO",
                channel=Channel.ONLINE,
                submitted_at=datetime.now(UTC),
                applicant_id=applicant,
            )
        ),
    )

    async def mailed() -> bool:
        return len(smtp.messages) == 1

    await wait_for(mailed)

    async def log_gone() -> bool:
        return await svc.pool.fetchval("SELECT count(*) FROM notifications") == 0

    await wait_for(log_gone)


async def test_a_capture_that_arrives_before_the_applicant_is_known_is_told_once_it_is(
    start_service: Any, smtp: RecordingSmtp, js: JetStreamContext, namespace: str
) -> None:
    """Streams have no order between them: payments' capture may overtake applications' event."""
    svc = await start_service("notifications")
    applicant, application = uuid.uuid4(), uuid.uuid4()
    await svc.http.put(f"/contacts/{applicant}", json={"email": "saburo@example.jp"})
    now = datetime.now(UTC)
    capture = envelope(
        PaymentCapturedV1(
            payment_id=uuid.uuid4(),
            facility_code="shiminka",
            channel=PaymentChannel.ONLINE,
            method=PaymentMethod.QR,
            brand="PayPay",
            amount_yen=450,
            item="戸籍謄本",
            occurred_at=now,
            receipt_number="shiminka-2026-000002",
            application_id=application,
        )
    )
    await publish_envelope(js, namespace, capture)

    async def parked() -> bool:
        return bool(await svc.pool.fetchval("SELECT count(*) FROM awaiting_applicant"))

    await wait_for(parked)
    assert smtp.messages == []
    await publish_envelope(
        js,
        namespace,
        envelope(
            ApplicationPaymentRequestedV1(
                application_id=application,
                procedure_code="KOSEKI",
                amount_yen=450,
                fee_item="戸籍謄本",
                facility_code="shiminka",
                requested_at=now,
                applicant_id=applicant,
            )
        ),
    )

    async def two_mails() -> bool:
        return len(smtp.messages) == 2

    await wait_for(two_mails)
    confirmation = await svc.pool.fetchrow(
        "SELECT cause_event_id, address FROM notifications WHERE rule = 'payment-confirmation'"
    )
    assert confirmation["cause_event_id"] == capture.id
    assert confirmation["address"] == "saburo@example.jp"
    assert await svc.pool.fetchval("SELECT count(*) FROM awaiting_applicant") == 0


async def test_a_settlement_mismatch_tells_the_finance_office(
    start_service: Any,
    smtp: RecordingSmtp,
    js: JetStreamContext,
    namespace: str,
    notify_env: pytest.MonkeyPatch,
) -> None:
    from contracts.envelope import event_examples
    from contracts.payments import SettlementMismatchV1

    notify_env.setenv("NOTIFY_STAFF", json.dumps({"finance_office": ["mailto:kaikei@example.jp"]}))
    await start_service("notifications")
    [example] = event_examples(SettlementMismatchV1)
    await publish_envelope(js, namespace, envelope(SettlementMismatchV1.model_validate(example)))

    async def told() -> bool:
        return len(smtp.messages) == 1

    await wait_for(told)
    [mail] = smtp.messages
    assert mail["To"] == "kaikei@example.jp"
    assert "精算の不一致" in str(mail["Subject"])
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    assert "差 1件 300円" in body.get_content()
