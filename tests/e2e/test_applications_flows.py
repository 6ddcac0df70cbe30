"""The applications service as a process (`cityhall serve applications`), over HTTP and real
NATS: the issue's "Done when" flows.

Payments is played by the test: it reads ApplicationPaymentRequested from JetStream and publishes
PaymentCaptured as payments would.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext
from pypdf import PdfReader

from cityhall.embedded import free_port
from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationPaidV1,
    ApplicationPaymentRequestedV1,
    ApplicationSubmittedV1,
    CertificateIssuedV1,
)
from contracts.envelope import Envelope
from contracts.payments import PaymentCapturedV1, PaymentChannel, PaymentMethod
from contracts.subjects import APPLICATIONS
from tests.e2e.helpers import Processes, clean_env, is_ready, wait_until
from tests.integration.applications.jpki import CardCA, challenge_for
from tests.integration.helpers import publish_envelope
from tests.tokens import ENV_VARS, applicant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STAFF_TOKEN = "e2e-counter-staff-token"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
KOSEKI: dict[str, Any] = {
    "procedure_code": "KOSEKI_TOHON",
    "channel": "online",
    "form": {"honseki": "郡山市朝日一丁目23番", "hittosha": "郡山太郎"},
}


@dataclass
class Service:
    http: httpx.AsyncClient
    ca: CardCA
    """The signature CA, under ``root`` (the trust anchor)."""
    root: CardCA
    crl_path: Path
    js: JetStreamContext
    namespace: str

    def publish_crls(self) -> None:
        self.crl_path.write_bytes(self.root.crl() + self.ca.crl())

    async def signed(
        self, signer: Any, citizen: dict[str, str], body: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """``body`` (KOSEKI) signed as a frontend does: a challenge for ``citizen``, then the
        card's signature over it, the applicant and the application."""
        return signer.sign(body or KOSEKI, await challenge_for(self.http, citizen), **kw)

    async def events(self, event_type: str) -> list[dict[str, Any]]:
        stream = APPLICATIONS.stream_name(self.namespace)
        info = await self.js.stream_info(stream)
        found = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await self.js.get_msg(stream, seq=seq)
            if msg.headers and msg.headers["ce-type"] == event_type:
                found.append(json.loads(msg.data or b"{}"))
        return found

    async def wait_event(self, event_type: str, application_id: str) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            for e in await self.events(event_type):
                if e["application_id"] == application_id:
                    return e
            return None

        event: dict[str, Any] = await wait_until(found, timeout=15)
        return event


@pytest.fixture
async def service(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
    tmp_path: Path,
) -> AsyncIterator[Service]:
    root = CardCA("E2E J-LIS Root CA")
    ca = CardCA("E2E J-LIS Signature CA", parent=root)
    (tmp_path / "anchors.pem").write_bytes(root.pem())
    (tmp_path / "jpki.crl").write_bytes(root.crl() + ca.crl())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        NATS_URL=nats_url,
        APPLICATIONS_DATABASE_URL=database_url,
        CITYHALL_NAMESPACE=namespace,
        HTTP_PORT=str(port),
        APPLICATIONS_STAFF_TOKENS=f"counter01={STAFF_TOKEN}",
        APPLICATIONS_JPKI_TRUST_ANCHORS=str(tmp_path / "anchors.pem"),
        APPLICATIONS_JPKI_CRL=str(tmp_path / "jpki.crl"),
        **ENV_VARS,
    )
    proc = processes.cityhall("applications", "serve", "applications", env=env)
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, url)

        await wait_until(ready, timeout=30, message=proc.output)
        yield Service(http, ca, root, tmp_path / "jpki.crl", js, namespace)


async def test_a_group_1_fee_free_online_application_is_approved(service: Service) -> None:
    http = service.http
    citizen = applicant()
    body = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}
    app = (await http.post("/applications", json=body, headers=citizen)).json()
    assert (app["status"], app["fee_yen"]) == ("submitted", 0)
    for step in ("review", "approve"):
        assert (await http.post(f"/applications/{app['id']}/{step}", headers=STAFF)).is_success
    seen = (await http.get(f"/applications/{app['id']}", headers=citizen)).json()
    assert seen["status"] == "approved"
    submitted = await service.wait_event(ApplicationSubmittedV1.event_type, app["id"])
    assert submitted["channel"] == "online"
    await service.wait_event(ApplicationApprovedV1.event_type, app["id"])


async def test_a_counter_entry_is_recorded_as_such(service: Service) -> None:
    resp = await service.http.post(
        "/applications", json=KOSEKI | {"channel": "counter"}, headers=STAFF
    )
    assert resp.status_code == 201, resp.text  # no card signature at the counter
    submitted = await service.wait_event(ApplicationSubmittedV1.event_type, resp.json()["id"])
    assert submitted["channel"] == "counter"


async def test_group_2_accepts_a_valid_signature_and_refuses_each_invalid_kind(
    service: Service,
) -> None:
    http, ca, citizen = service.http, service.ca, applicant()
    good = await http.post(
        "/applications", json=await service.signed(ca.issue(), citizen), headers=citizen
    )
    assert good.status_code == 201, good.text
    assert good.json()["identity"]["result"] == "verified"

    revoked = ca.issue()
    ca.revoked.append(revoked.cert.serial_number)
    service.publish_crls()
    tampered = await service.signed(ca.issue(), citizen)
    tampered["form"] = KOSEKI["form"] | {"hittosha": "別人"}
    stranger = CardCA("Unknown CA")
    used = await service.signed(ca.issue(), citizen)
    assert (await http.post("/applications", json=used, headers=citizen)).status_code == 201
    no_ku = ca.issue(usage=None)
    cases = {
        "identity.signature_required": KOSEKI,
        "identity.signature_invalid": tampered,
        "identity.unknown_ca": await service.signed(
            stranger.issue(), citizen, chain=[stranger.cert]
        ),
        "identity.expired": await service.signed(ca.issue(valid_days=(-800, -2)), citizen),
        "identity.certificate_revoked": await service.signed(revoked, citizen),
        "identity.certificate_not_for_signing": await service.signed(no_ku, citizen),
        "identity.issuer_not_a_ca": await service.signed(ca.issue().issue_as_if_a_ca(), citizen),
        "identity.challenge_used": used,
    }
    for expected, body in cases.items():
        resp = await http.post("/applications", json=body, headers=citizen)
        assert resp.status_code == 422, (expected, resp.text)
        [detail] = resp.json()["detail"]
        assert (detail["loc"], detail["type"]) == (["body", "identity"], expected)
        assert detail["msg"]
    # The same signed submission from another account.
    replayed = await http.post("/applications", json=used, headers=applicant())
    assert replayed.json()["detail"][0]["type"] == "identity.challenge_for_another_applicant"


async def pay(service: Service, app: dict[str, Any]) -> None:
    """Payments' part: the request arrives on NATS, the capture goes back on NATS."""
    request = await service.wait_event(ApplicationPaymentRequestedV1.event_type, app["id"])
    capture = PaymentCapturedV1(
        payment_id=uuid.uuid4(),
        facility_code=request["facility_code"],
        channel=PaymentChannel.ONLINE,
        method=PaymentMethod.QR,
        brand="PayPay",
        amount_yen=request["amount_yen"],
        item=request["fee_item"],
        occurred_at=request["requested_at"],
        receipt_number="shiminka-2026-000777",
        application_id=uuid.UUID(app["id"]),
    )
    await publish_envelope(
        service.js, service.namespace, Envelope.new(capture, source="/cityhall/payments")
    )
    await service.wait_event(ApplicationPaidV1.event_type, app["id"])


async def test_a_signed_group_2_application_is_paid_and_its_certificate_issued_to_its_signer(
    service: Service,
) -> None:
    """The whole flow a frontend follows: challenge, card signature, submission; then the
    fee, staff's decision and the certificate, downloadable by the signer only."""
    http, citizen = service.http, applicant()
    body = await service.signed(service.ca.issue(name="郡山 花子"), citizen)
    resp = await http.post("/applications", json=body, headers=citizen)
    assert resp.status_code == 201, resp.text
    app = resp.json()
    assert (app["status"], app["fee_yen"]) == ("awaiting_payment", 450)
    await pay(service, app)
    url = f"/applications/{app['id']}"
    for step in ("review", "approve", "certificate"):
        resp = await http.post(f"{url}/{step}", headers=STAFF)
        assert resp.status_code == 200, resp.text
    pdf = await http.get(f"{url}/certificate.pdf", headers=citizen)
    assert pdf.status_code == 200, pdf.text
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "郡山 花子" in text
    # Replayed from another account, the signature gets that account nothing.
    thief = applicant()
    replay = await http.post("/applications", json=body, headers=thief)
    assert replay.status_code == 422
    assert (await http.get(f"{url}/certificate.pdf", headers=thief)).status_code == 404


async def test_a_certificate_with_a_fee_goes_through_payment_to_issuance_and_download(
    service: Service,
) -> None:
    http = service.http
    citizen = applicant()
    body = {"procedure_code": "JUMINHYO", "form": {"copies": 1}}
    app = (await http.post("/applications", json=body, headers=citizen)).json()
    url = f"/applications/{app['id']}"
    assert app["status"] == "awaiting_payment", app  # online: the fee is asked for at once

    await pay(service, app)

    for step in ("review", "approve", "certificate"):
        resp = await http.post(f"{url}/{step}", headers=STAFF)
        assert resp.status_code == 200, resp.text
    number = resp.json()["certificate_number"]
    issued = await service.wait_event(CertificateIssuedV1.event_type, app["id"])
    assert issued["certificate_number"] == number

    pdf = await http.get(f"{url}/certificate.pdf", headers=citizen)
    assert pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert number in text
    code = re.search(r"検証コード ([A-Z2-9]{5}-[A-Z2-9]{5})", text)
    assert code is not None
    check = await http.post(
        "/certificates/verify",
        json={"certificate_number": number, "verification_code": code.group(1)},
    )
    assert check.json()["genuine"] is True


async def test_idempotent_retries_and_illegal_transitions(service: Service) -> None:
    http = service.http
    citizen = applicant()
    body = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "道路", "body": "穴"}}
    keyed = citizen | {"Idempotency-Key": "e2e-once"}
    first = await http.post("/applications", json=body, headers=keyed)
    retry = await http.post("/applications", json=body, headers=keyed)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    another = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "道路", "body": "段差"}}
    other = await http.post("/applications", json=another, headers=keyed)
    assert other.status_code == 422
    mine = (await http.get("/applications", headers=citizen)).json()
    assert mine["total"] == 1

    url = f"/applications/{first.json()['id']}"
    assert (await http.post(f"{url}/approve", headers=STAFF)).status_code == 409
    assert (await http.post(f"{url}/review", headers=STAFF)).status_code == 200
    assert (await http.post(f"{url}/withdraw", headers=citizen)).status_code == 409
    assert (await http.post(f"{url}/review", headers=STAFF)).status_code == 409
    assert (await http.get(url, headers=citizen)).json()["status"] == "in_review"
