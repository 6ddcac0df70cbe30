"""Group 2 (本人確認必要型): the My Number card signature, its chain, validity and revocation;
refusals with a reason; and the My Number itself never kept, published or logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from nats.js import JetStreamContext

from contracts.subjects import APPLICATIONS
from tests.integration.applications.conftest import STAFF, STAFF_TOKEN
from tests.integration.applications.jpki import CardCA
from tests.integration.helpers import wait_for

KOSEKI: dict[str, Any] = {
    "procedure_code": "KOSEKI_TOHON",
    "channel": "online",
    "form": {"honseki": "郡山市朝日一丁目23番", "hittosha": "郡山太郎"},
}
MY_NUMBER = "123456789018"  # a well-formed individual number (valid check digit)


@pytest.fixture
def ca() -> CardCA:
    return CardCA("Test J-LIS Signature CA")


@pytest.fixture
async def service(
    start_service: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: CardCA
) -> Any:
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(ca.pem())
    crl = tmp_path / "jpki.crl"
    crl.write_bytes(ca.crl())
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", f"counter01={STAFF_TOKEN}")
    monkeypatch.setenv("APPLICATIONS_JPKI_TRUST_ANCHORS", str(anchors))
    monkeypatch.setenv("APPLICATIONS_JPKI_CRL", str(crl))
    running = await start_service("applications")
    running.crl_path = crl
    return running


def refusal(resp: Any) -> str:
    assert resp.status_code == 422, resp.text
    [detail] = resp.json()["detail"]
    assert detail["loc"] == ["body", "identity"]
    return str(detail["type"])


async def test_a_valid_signature_is_accepted_and_only_the_verified_attributes_are_kept(
    service: Any, ca: CardCA
) -> None:
    signer = ca.issue()
    resp = await service.http.post("/applications", json=signer.sign(KOSEKI))
    assert resp.status_code == 201, resp.text
    identity = resp.json()["identity"]
    assert identity["name"] == "郡山 太郎"
    assert identity["address"] == "福島県郡山市朝日一丁目23番7号"
    assert identity["birth_date"] == "1980-04-01"
    assert identity["certificate_serial"] == format(signer.cert.serial_number, "x")
    assert identity["issuer"] == "CN=Test J-LIS Signature CA"
    assert identity["result"] == "verified"
    stored = (await service.http.get(f"/applications/{resp.json()['id']}", headers=STAFF)).json()
    assert stored["identity"] == identity


async def test_group_2_online_without_a_signature_is_refused(service: Any) -> None:
    resp = await service.http.post("/applications", json=KOSEKI)
    assert refusal(resp) == "identity.signature_required"
    assert "本人確認" in resp.json()["detail"][0]["msg"]


async def test_group_2_at_the_counter_needs_no_card_signature(service: Any) -> None:
    body = KOSEKI | {"channel": "counter"}
    resp = await service.http.post("/applications", json=body, headers=STAFF)
    assert resp.status_code == 201, resp.text


async def test_a_signature_over_other_content_is_refused(service: Any, ca: CardCA) -> None:
    signed = ca.issue().sign(KOSEKI)
    signed["form"] = signed["form"] | {"hittosha": "郡山花子"}  # changed after signing
    assert refusal(await service.http.post("/applications", json=signed)) == (
        "identity.bad_signature"
    )


async def test_a_certificate_from_an_unknown_ca_is_refused(service: Any) -> None:
    stranger = CardCA("Somebody Else's CA")
    signed = stranger.issue().sign(KOSEKI, chain=[stranger.cert])
    assert refusal(await service.http.post("/applications", json=signed)) == "identity.unknown_ca"


async def test_an_expired_certificate_is_refused(service: Any, ca: CardCA) -> None:
    signed = ca.issue(valid_days=(-2000, -1)).sign(KOSEKI)
    resp = await service.http.post("/applications", json=signed)
    assert refusal(resp) == "identity.expired"


async def test_a_revoked_certificate_is_refused(service: Any, ca: CardCA) -> None:
    signer = ca.issue()
    before = await service.http.post("/applications", json=signer.sign(KOSEKI))
    assert before.status_code == 201, before.text
    # The operator publishes a new CRL (the holder moved: 4 basic items changed).
    ca.revoked.append(signer.cert.serial_number)
    service.crl_path.write_bytes(ca.crl())
    resp = await service.http.post("/applications", json=signer.sign(KOSEKI))
    assert refusal(resp) == "identity.revoked"


async def test_malformed_identity_is_refused_with_a_reason(service: Any, ca: CardCA) -> None:
    signed = ca.issue().sign(KOSEKI)
    signed["identity"]["signature"] = "not base64!"
    assert refusal(await service.http.post("/applications", json=signed)) == "identity.malformed"
    signed = ca.issue().sign(KOSEKI)
    signed["identity"]["certificate_chain"] = ["-----BEGIN CERTIFICATE-----\nAAAA\n"]
    assert refusal(await service.http.post("/applications", json=signed)) == "identity.malformed"


async def test_a_my_number_is_never_stored_published_or_logged(
    service: Any,
    ca: CardCA,
    db: Any,
    js: JetStreamContext,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    http = service.http
    # A certificate that (unlike JPKI's) carries the number as a subject attribute.
    signer = ca.issue(extra=[x509.NameAttribute(NameOID.SERIAL_NUMBER, MY_NUMBER)])
    accepted = await http.post("/applications", json=signer.sign(KOSEKI))
    assert accepted.status_code == 201, accepted.text
    app_id = accepted.json()["id"]
    # A citizen typing it into a form is refused, naming the field.
    typed = KOSEKI | {"channel": "counter", "form": KOSEKI["form"] | {"hittosha": MY_NUMBER}}
    resp = await http.post("/applications", json=typed, headers=STAFF)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "form", "hittosha"]
    assert "My Number" in resp.json()["detail"][0]["msg"]
    # ... and a refused signature carrying it.
    expired = ca.issue(
        valid_days=(-900, -1), extra=[x509.NameAttribute(NameOID.SERIAL_NUMBER, MY_NUMBER)]
    )
    assert refusal(await http.post("/applications", json=expired.sign(KOSEKI))) == (
        "identity.expired"
    )
    await http.post(f"/applications/{app_id}/review", headers=STAFF)

    # Tables: every row of every table in the service's schema.
    schema = f"{namespace}_applications"
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    assert {"applications", "outbox", "idempotency_keys"} <= {t["table_name"] for t in tables}
    for t in tables:
        rows = await db.fetch(f'SELECT t::text AS row FROM "{schema}"."{t["table_name"]}" t')
        for row in rows:
            assert MY_NUMBER not in row["row"], f"My Number found in table {t['table_name']}"

    # Streams: every message the service published.
    stream = APPLICATIONS.stream_name(namespace)

    async def published() -> int:
        return int((await js.stream_info(stream)).state.messages)

    await wait_for(published)
    info = await js.stream_info(stream)
    for seq in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq=seq)
        assert MY_NUMBER not in (msg.data or b"").decode()
        assert MY_NUMBER not in json.dumps(dict(msg.headers or {}))

    # Logs: every record, message and extra fields.
    assert caplog.records
    for record in caplog.records:
        assert MY_NUMBER not in record.getMessage()
        assert MY_NUMBER not in json.dumps(vars(record), default=str)


async def test_a_refusal_of_a_cached_procedure_is_logged_once_and_stores_nothing(
    service: Any, ca: CardCA, caplog: pytest.LogCaptureFixture
) -> None:
    """Once KOSEKI_TOHON is cached, a submission is decided before the database is touched
    (the group commit's path): a refusal there is decided, logged and answered once."""
    accepted = await service.http.post("/applications", json=ca.issue().sign(KOSEKI))
    assert accepted.status_code == 201, accepted.text
    caplog.set_level(logging.WARNING, logger="services.applications.handlers")
    stranger = CardCA("Somebody Else's CA")
    signed = stranger.issue().sign(KOSEKI, chain=[stranger.cert])
    resp = await service.http.post(
        "/applications", json=signed, headers={"Idempotency-Key": "refused-once"}
    )
    assert refusal(resp) == "identity.unknown_ca"
    refused = [r for r in caplog.records if r.getMessage() == "identity check refused"]
    assert [getattr(r, "reason", None) for r in refused] == ["unknown_ca"]
    assert await service.pool.fetchval("SELECT count(*) FROM applications") == 1
    assert await service.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0
