"""Group 2 (本人確認必要型): a My Number card signature proves who applied, for this submission,
once. The signed content binds the applicant's account and a single-use challenge; the
certification path is validated by `cryptography.x509.verification` with CA constraints and
key usage, and every certificate on it is checked against its issuer's CRL. Refusals name
their reason; the My Number itself is never kept, published or logged."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from nats.js import JetStreamContext

from contracts.subjects import APPLICATIONS
from tests.integration.applications.conftest import STAFF, STAFF_TOKEN
from tests.integration.applications.jpki import (
    AUTHENTICATION,
    CardCA,
    challenge_for,
    key_usage,
)
from tests.integration.helpers import wait_for
from tests.tokens import ENV, applicant, applicant_id_of

KOSEKI: dict[str, Any] = {
    "procedure_code": "KOSEKI_TOHON",
    "channel": "online",
    "form": {"honseki": "郡山市朝日一丁目23番", "hittosha": "郡山太郎"},
}
MY_NUMBER = "123456789018"  # a well-formed individual number (valid check digit)


@dataclass
class Pki:
    """The test J-LIS: a root the service trusts and the signature CA under it."""

    root: CardCA
    ca: CardCA
    crl_path: Path

    def publish_crls(self) -> None:
        """The operator replaces the CRL file (both CAs' lists) in place."""
        self.crl_path.write_bytes(self.root.crl() + self.ca.crl())


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    root = CardCA("Test J-LIS Root CA")
    pki = Pki(root, CardCA("Test J-LIS Signature CA", parent=root), tmp_path / "jpki.crl")
    pki.publish_crls()
    return pki


@pytest.fixture
def ca(pki: Pki) -> CardCA:
    return pki.ca


async def start(start_service: Any, monkeypatch: pytest.MonkeyPatch, pki: Pki, **env: str) -> Any:
    anchors = pki.crl_path.parent / "anchors.pem"
    anchors.write_bytes(pki.root.pem())
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", f"counter01={STAFF_TOKEN}")
    monkeypatch.setenv("APPLICATIONS_JPKI_TRUST_ANCHORS", str(anchors))
    monkeypatch.setenv("APPLICATIONS_JPKI_CRL", str(pki.crl_path))
    monkeypatch.setenv(*ENV)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return await start_service("applications")


@pytest.fixture
async def service(start_service: Any, monkeypatch: pytest.MonkeyPatch, pki: Pki) -> Any:
    return await start(start_service, monkeypatch, pki)


@pytest.fixture
def citizen() -> dict[str, str]:
    return applicant()


async def signed(service: Any, signer: Any, citizen: dict[str, str], **kw: Any) -> dict[str, Any]:
    """KOSEKI signed the way a frontend does: a challenge for ``citizen``, then the card."""
    return signer.sign(KOSEKI, await challenge_for(service.http, citizen), **kw)


def refusal(resp: Any, status: int = 422) -> str:
    assert resp.status_code == status, resp.text
    [detail] = resp.json()["detail"]
    assert detail["loc"] == ["body", "identity"]
    assert detail["msg"]
    return str(detail["type"])


async def applications_count(service: Any) -> int:
    return int(await service.pool.fetchval("SELECT count(*) FROM applications"))


# -- the good path ------------------------------------------------------------------------------


async def test_a_valid_signature_is_accepted_and_only_the_verified_attributes_are_kept(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    signer = ca.issue()
    resp = await service.http.post(
        "/applications", json=await signed(service, signer, citizen), headers=citizen
    )
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


async def test_a_challenge_is_issued_to_the_signed_in_applicant_for_a_few_minutes(
    service: Any, citizen: dict[str, str]
) -> None:
    answer = await challenge_for(service.http, citizen)
    assert answer["applicant"] == applicant_id_of(citizen)
    assert answer["purpose"] == "koriyama-cityhall/submit-application/v1"
    assert len(answer["challenge"]) == 43
    row = await service.pool.fetchrow(
        "SELECT issued_at, expires_at, used_at FROM identity_challenges WHERE challenge = $1",
        answer["challenge"],
    )
    assert (row["expires_at"] - row["issued_at"]).total_seconds() == 300
    assert row["used_at"] is None
    assert answer["challenge"] != (await challenge_for(service.http, citizen))["challenge"]


async def test_challenges_are_for_signed_in_applicants_only(service: Any) -> None:
    anonymous = await service.http.post("/identity/challenges")
    assert anonymous.status_code == 401, anonymous.text
    staff = await service.http.post("/identity/challenges", headers=STAFF)
    assert staff.status_code == 403, staff.text
    assert await service.pool.fetchval("SELECT count(*) FROM identity_challenges") == 0


async def test_an_idempotent_retry_of_a_signed_submission_gets_its_first_answer(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(), citizen)
    headers = citizen | {"Idempotency-Key": "koseki-1"}
    first = await service.http.post("/applications", json=body, headers=headers)
    again = await service.http.post("/applications", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert await applications_count(service) == 1


async def test_concurrent_retries_of_one_signed_submission_make_one_application(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    """Sent twice at once with its Idempotency-Key, both get the one application; sent twice
    at once without, one is accepted and the other finds the challenge used."""
    body = await signed(service, ca.issue(), citizen)
    headers = citizen | {"Idempotency-Key": "koseki-twice"}
    answers = await asyncio.gather(
        *(service.http.post("/applications", json=body, headers=headers) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1

    body = await signed(service, ca.issue(), citizen)
    answers = await asyncio.gather(
        *(service.http.post("/applications", json=body, headers=citizen) for _ in range(4))
    )
    assert sorted(a.status_code for a in answers) == [201, 422, 422, 422]
    assert {refusal(a) for a in answers if a.status_code == 422} == {"identity.challenge_used"}
    assert await applications_count(service) == 2


# -- replays: the signature proves who applied, for this submission, once ------------------------


async def test_signature_replayed_from_another_account_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    """A signed submission captured once (before or after its owner files it) and filed again
    from another account is refused, and that account gets nothing of the owner's."""
    body = await signed(service, ca.issue(), citizen)
    thief = applicant()
    before = await service.http.post("/applications", json=body, headers=thief)
    assert refusal(before) == "identity.challenge_for_another_applicant"
    own = await service.http.post("/applications", json=body, headers=citizen)
    assert own.status_code == 201, own.text
    after = await service.http.post("/applications", json=body, headers=thief)
    assert refusal(after) == "identity.challenge_for_another_applicant"
    mine = (await service.http.get("/applications", headers=thief)).json()
    assert mine["total"] == 0
    pdf = await service.http.get(f"/applications/{own.json()['id']}/certificate.pdf", headers=thief)
    assert pdf.status_code == 404


async def test_signature_moved_to_the_thiefs_own_challenge_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    """Re-targeted: the captured signature with a challenge the other account asked for does
    not verify, since it covers neither that account nor that challenge."""
    body = await signed(service, ca.issue(), citizen)
    thief = applicant()
    own_challenge = await challenge_for(service.http, thief)
    body["identity"]["challenge"] = own_challenge["challenge"]
    resp = await service.http.post("/applications", json=body, headers=thief)
    assert refusal(resp) == "identity.signature_invalid"
    assert await applications_count(service) == 0


async def test_signature_replayed_after_its_challenge_was_used_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(), citizen)
    first = await service.http.post("/applications", json=body, headers=citizen)
    assert first.status_code == 201, first.text
    replay = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(replay) == "identity.challenge_used"
    with_a_new_key = citizen | {"Idempotency-Key": "another-try"}
    replay = await service.http.post("/applications", json=body, headers=with_a_new_key)
    assert refusal(replay) == "identity.challenge_used"
    assert await applications_count(service) == 1


async def test_signature_replayed_after_its_challenge_expired_is_refused(
    start_service: Any, monkeypatch: pytest.MonkeyPatch, pki: Pki, citizen: dict[str, str]
) -> None:
    """A challenge that lives a microsecond has expired by the time anything is signed."""
    service = await start(
        start_service, monkeypatch, pki, APPLICATIONS_IDENTITY_CHALLENGE_LIFETIME_S="0.000001"
    )
    body = await signed(service, pki.ca.issue(), citizen)
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.challenge_expired"
    assert "expired" in resp.json()["detail"][0]["msg"]


async def test_a_challenge_the_service_never_issued_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    made_up = {"challenge": "A" * 43, "applicant": applicant_id_of(citizen)}
    body = ca.issue().sign(KOSEKI, made_up)
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.challenge_unknown"


async def test_a_signed_submission_needs_the_applicants_sign_in(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(), citizen)
    resp = await service.http.post("/applications", json=body)
    assert refusal(resp, 401) == "identity.sign_in_required"
    resp = await service.http.post("/applications", json=body, headers=STAFF)
    assert refusal(resp, 401) == "identity.sign_in_required"


# -- the certification path -------------------------------------------------------------------


async def test_a_leaf_certificate_posing_as_a_ca_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    """A citizen's valid certificate "issues" one to someone else: it is not a CA."""
    impostor = ca.issue().issue_as_if_a_ca()
    resp = await service.http.post(
        "/applications", json=await signed(service, impostor, citizen), headers=citizen
    )
    assert refusal(resp) == "identity.issuer_not_a_ca"


async def test_an_intermediate_without_ca_constraints_is_refused(
    service: Any, pki: Pki, citizen: dict[str, str]
) -> None:
    """keyUsage keyCertSign alone does not make a CA: basicConstraints cA must say so."""
    unconstrained = CardCA("Unconstrained CA", parent=pki.root, basic_constraints=False)
    pki.crl_path.write_bytes(pki.root.crl() + pki.ca.crl() + unconstrained.crl())
    resp = await service.http.post(
        "/applications",
        json=await signed(service, unconstrained.issue(), citizen),
        headers=citizen,
    )
    assert refusal(resp) == "identity.issuer_not_a_ca"


async def test_a_revoked_intermediate_is_refused(
    service: Any, pki: Pki, citizen: dict[str, str]
) -> None:
    """The library validates the path, not revocation: each certificate on it is looked up in
    its issuer's CRL, the signature CA's in the root's."""
    signer = pki.ca.issue()
    before = await service.http.post(
        "/applications", json=await signed(service, signer, citizen), headers=citizen
    )
    assert before.status_code == 201, before.text
    pki.root.revoked.append(pki.ca.cert.serial_number)
    pki.publish_crls()
    resp = await service.http.post(
        "/applications", json=await signed(service, signer, citizen), headers=citizen
    )
    assert refusal(resp) == "identity.certificate_revoked"
    assert "CA certificate CN=Test J-LIS Signature CA" in resp.json()["detail"][0]["msg"]


async def test_a_revoked_signature_certificate_is_refused(
    service: Any, pki: Pki, citizen: dict[str, str]
) -> None:
    signer = pki.ca.issue()
    # The operator publishes a new CRL (the holder moved: 4 basic items changed).
    pki.ca.revoked.append(signer.cert.serial_number)
    pki.publish_crls()
    resp = await service.http.post(
        "/applications", json=await signed(service, signer, citizen), headers=citizen
    )
    assert refusal(resp) == "identity.certificate_revoked"
    assert "signer's certificate" in resp.json()["detail"][0]["msg"]


async def test_revocation_is_unknown_without_a_current_crl_for_every_certificate(
    service: Any, pki: Pki, citizen: dict[str, str]
) -> None:
    pki.crl_path.write_bytes(pki.ca.crl())  # the root's list (of revoked CAs) is missing
    resp = await service.http.post(
        "/applications", json=await signed(service, pki.ca.issue(), citizen), headers=citizen
    )
    assert refusal(resp) == "identity.revocation_unknown"


@pytest.mark.parametrize(
    "usage",
    [
        key_usage(non_repudiation=True),
        AUTHENTICATION,
        key_usage(digital_signature=True, non_repudiation=True, key_cert_sign=True),
        None,
    ],
    ids=["without-digital-signature", "authentication-certificate", "may-sign-certs", "none"],
)
async def test_a_certificate_not_for_signing_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str], usage: x509.KeyUsage | None
) -> None:
    """Only the signature certificate (署名用電子証明書: digitalSignature and nonRepudiation)
    signs an application; the user-authentication certificate proves a log-in only."""
    resp = await service.http.post(
        "/applications",
        json=await signed(service, ca.issue(usage=usage), citizen),
        headers=citizen,
    )
    assert refusal(resp) == "identity.certificate_not_for_signing"


async def test_a_certificate_from_an_unknown_ca_is_refused(
    service: Any, citizen: dict[str, str]
) -> None:
    stranger = CardCA("Somebody Else's CA")
    body = await signed(service, stranger.issue(), citizen, chain=[stranger.cert])
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.unknown_ca"


async def test_an_expired_certificate_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(valid_days=(-2000, -1)), citizen)
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.expired"


# -- content ------------------------------------------------------------------------------------


async def test_group_2_online_without_a_signature_is_refused(
    service: Any, citizen: dict[str, str]
) -> None:
    resp = await service.http.post("/applications", json=KOSEKI, headers=citizen)
    assert refusal(resp) == "identity.signature_required"
    assert "本人確認" in resp.json()["detail"][0]["msg"]


async def test_group_2_at_the_counter_needs_no_card_signature(service: Any) -> None:
    body = KOSEKI | {"channel": "counter"}
    resp = await service.http.post("/applications", json=body, headers=STAFF)
    assert resp.status_code == 201, resp.text


async def test_a_signature_over_other_content_is_refused(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(), citizen)
    body["form"] = body["form"] | {"hittosha": "郡山花子"}  # changed after signing
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.signature_invalid"
    # Refused requests store nothing: the challenge is still there to sign the right form.
    challenge = {"challenge": body["identity"]["challenge"], "applicant": applicant_id_of(citizen)}
    fixed = ca.issue().sign(KOSEKI, challenge)
    assert (await service.http.post("/applications", json=fixed, headers=citizen)).is_success


async def test_malformed_identity_is_refused_with_a_reason(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(), citizen)
    body["identity"]["signature"] = "not base64!"
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.malformed"
    body = await signed(service, ca.issue(), citizen)
    body["identity"]["certificate_chain"] = ["-----BEGIN CERTIFICATE-----\nAAAA\n"]
    resp = await service.http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.malformed"


# -- what is kept --------------------------------------------------------------------------------


async def test_a_my_number_is_never_stored_published_or_logged(
    service: Any,
    ca: CardCA,
    citizen: dict[str, str],
    db: Any,
    js: JetStreamContext,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    http = service.http
    # A certificate that (unlike JPKI's) carries the number as a subject attribute.
    signer = ca.issue(extra=[x509.NameAttribute(NameOID.SERIAL_NUMBER, MY_NUMBER)])
    accepted = await http.post(
        "/applications", json=await signed(service, signer, citizen), headers=citizen
    )
    assert accepted.status_code == 201, accepted.text
    app_id = accepted.json()["id"]
    # A citizen typing it into a form is refused, naming the field.
    typed = KOSEKI | {"channel": "counter", "form": KOSEKI["form"] | {"hittosha": MY_NUMBER}}
    resp = await http.post("/applications", json=typed, headers=STAFF)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "form", "hittosha"]
    assert "My Number" in resp.json()["detail"][0]["msg"]
    # ... and refused signatures carrying it: expired, and posing as a CA (the library's
    # refusal names certificates by subject: none of its text is shown or logged).
    expired = ca.issue(
        valid_days=(-900, -1), extra=[x509.NameAttribute(NameOID.SERIAL_NUMBER, MY_NUMBER)]
    )
    body = await signed(service, expired, citizen)
    assert refusal(await http.post("/applications", json=body, headers=citizen)) == (
        "identity.expired"
    )
    impostor = signer.issue_as_if_a_ca()
    body = await signed(service, impostor, citizen)
    resp = await http.post("/applications", json=body, headers=citizen)
    assert refusal(resp) == "identity.issuer_not_a_ca"
    assert MY_NUMBER not in resp.text
    await http.post(f"/applications/{app_id}/review", headers=STAFF)

    # Tables: every row of every table in the service's schema.
    schema = f"{namespace}_applications"
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    assert {"applications", "outbox", "idempotency_keys", "identity_challenges"} <= {
        t["table_name"] for t in tables
    }
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


async def test_a_refused_signed_submission_is_logged_once_and_stores_nothing(
    service: Any, ca: CardCA, citizen: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A signed submission goes alone (its challenge taken in its transaction): a refusal
    there is decided, logged and answered once, and neither its key nor its challenge's use
    is kept."""
    accepted = await service.http.post(
        "/applications", json=await signed(service, ca.issue(), citizen), headers=citizen
    )
    assert accepted.status_code == 201, accepted.text
    caplog.set_level(logging.WARNING, logger="services.applications.handlers.submission")
    stranger = CardCA("Somebody Else's CA")
    body = await signed(service, stranger.issue(), citizen, chain=[stranger.cert])
    resp = await service.http.post(
        "/applications", json=body, headers=citizen | {"Idempotency-Key": "refused-once"}
    )
    assert refusal(resp) == "identity.unknown_ca"
    refused = [r for r in caplog.records if r.getMessage() == "identity check refused"]
    assert [getattr(r, "reason", None) for r in refused] == ["unknown_ca"]
    assert await applications_count(service) == 1
    assert await service.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0
    unused = await service.pool.fetchval(
        "SELECT used_at FROM identity_challenges WHERE challenge = $1",
        body["identity"]["challenge"],
    )
    assert unused is None


async def test_a_used_challenge_records_the_application_it_signed(
    service: Any, ca: CardCA, citizen: dict[str, str]
) -> None:
    body = await signed(service, ca.issue(), citizen)
    app = (await service.http.post("/applications", json=body, headers=citizen)).json()
    row = await service.pool.fetchrow(
        "SELECT applicant_id, used_at, application_id FROM identity_challenges"
    )
    assert str(row["application_id"]) == app["id"]
    assert row["used_at"] is not None
    assert row["applicant_id"] == uuid.UUID(applicant_id_of(citizen))
