"""Group-2 identity rules without servers: the challenge, the signed bytes, and the revocation
checks the path library leaves to us (it validates paths, not revocation)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from services.applications import identity, signatures
from services.applications.identity import IdentityRefusal, IdentityRefused
from services.applications.signatures import TrustConfig
from tests.integration.applications.jpki import NOW, CardCA, pem

ME, SOMEONE_ELSE = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LIFETIME = timedelta(minutes=5)


def reason_of(call: object) -> IdentityRefusal:
    with pytest.raises(IdentityRefused) as refused:
        call()  # type: ignore[operator]
    return refused.value.reason


def test_a_challenge_is_random_and_lives_its_lifetime() -> None:
    c = identity.new_challenge(ME, T0, LIFETIME)
    assert (c.applicant_id, c.issued_at, c.expires_at, c.used_at) == (ME, T0, T0 + LIFETIME, None)
    assert len(c.value) == 43
    assert c.value != identity.new_challenge(ME, T0, LIFETIME).value
    assert identity.check_challenge(c, ME, T0 + LIFETIME - timedelta(microseconds=1)) == c


def test_a_challenge_is_refused_for_another_applicant_before_anything_else() -> None:
    used_and_expired = identity.new_challenge(ME, T0, LIFETIME)
    used_and_expired = identity.Challenge(**{**vars(used_and_expired), "used_at": T0})
    late = T0 + LIFETIME
    assert reason_of(lambda: identity.check_challenge(used_and_expired, SOMEONE_ELSE, late)) == (
        IdentityRefusal.CHALLENGE_FOR_ANOTHER_APPLICANT
    )
    assert reason_of(lambda: identity.check_challenge(used_and_expired, ME, late)) == (
        IdentityRefusal.CHALLENGE_USED
    )
    fresh = identity.new_challenge(ME, T0, LIFETIME)
    assert reason_of(lambda: identity.check_challenge(fresh, ME, late)) == (
        IdentityRefusal.CHALLENGE_EXPIRED
    )
    assert reason_of(lambda: identity.check_challenge(None, ME, T0)) == (
        IdentityRefusal.CHALLENGE_UNKNOWN
    )


def test_the_signed_bytes_bind_applicant_challenge_purpose_and_application() -> None:
    content = identity.canonical_content(
        applicant="5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f",
        challenge="q3Vb0kX2mJ8sT1yR6wE4uI7oP9aS5dF3gH2jK8lZ0xC",
        procedure_code="KOSEKI_TOHON",
        channel="online",
        form={"hittosha": "郡山太郎", "copies": 1},
    )
    assert (
        content
        == (
            '{"applicant":"5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f",'
            '"challenge":"q3Vb0kX2mJ8sT1yR6wE4uI7oP9aS5dF3gH2jK8lZ0xC","channel":"online",'
            '"form":{"copies":1,"hittosha":"郡山太郎"},"procedure_code":"KOSEKI_TOHON",'
            '"purpose":"koriyama-cityhall/submit-application/v1"}'
        ).encode()
    )


def verify_with(root: CardCA, ca: CardCA, crls: list[bytes]) -> IdentityRefusal | None:
    signer = ca.issue()
    challenge = {"applicant": str(ME), "challenge": "c" * 43}
    body = signer.sign({"procedure_code": "KOSEKI_TOHON", "form": {}}, challenge)
    content = identity.canonical_content(
        applicant=str(ME),
        challenge="c" * 43,
        procedure_code="KOSEKI_TOHON",
        channel="online",
        form={},
    )
    trust = TrustConfig.from_pem(root.pem(), b"".join(crls))
    try:
        signatures.verify(
            content, body["identity"]["signature"], body["identity"]["certificate_chain"], trust
        )
    except IdentityRefused as refused:
        return refused.reason
    return None


def test_every_certificate_but_the_anchor_needs_a_current_crl_from_its_own_issuer() -> None:
    root = CardCA("Unit Root")
    ca = CardCA("Unit Signature CA", parent=root)
    assert verify_with(root, ca, [root.crl(), ca.crl()]) is None
    assert verify_with(root, ca, [ca.crl()]) is IdentityRefusal.REVOCATION_UNKNOWN
    assert verify_with(root, ca, [root.crl()]) is IdentityRefusal.REVOCATION_UNKNOWN


def test_a_crl_in_the_issuers_name_but_not_signed_by_it_does_not_count() -> None:
    root = CardCA("Unit Root")
    ca = CardCA("Unit Signature CA", parent=root)
    forger = CardCA("Unit Signature CA")  # same name, another key
    assert verify_with(root, ca, [root.crl(), forger.crl()]) is (IdentityRefusal.REVOCATION_UNKNOWN)


def test_a_crl_past_its_next_update_does_not_count() -> None:
    root = CardCA("Unit Root")
    ca = CardCA("Unit Signature CA", parent=root)
    stale = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - timedelta(days=3))
        .next_update(NOW - timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    assert verify_with(root, ca, [root.crl(), stale]) is IdentityRefusal.REVOCATION_UNKNOWN


def test_a_trust_anchor_sent_in_the_chain_changes_nothing() -> None:
    root = CardCA("Unit Root")
    ca = CardCA("Unit Signature CA", parent=root)
    signer = ca.issue()
    challenge = {"applicant": str(ME), "challenge": "c" * 43}
    body = signer.sign({"procedure_code": "X1", "form": {}}, challenge, chain=[ca.cert, root.cert])
    content = identity.canonical_content(
        applicant=str(ME), challenge="c" * 43, procedure_code="X1", channel="online", form={}
    )
    trust = TrustConfig.from_pem(root.pem(), root.crl() + ca.crl())
    chain = body["identity"]["certificate_chain"]
    assert chain[-1] == pem(root.cert)
    verified = signatures.verify(content, body["identity"]["signature"], chain, trust)
    assert verified.issuer == "CN=Unit Signature CA"


def test_the_ca_rules_apply_to_the_trust_anchor_too() -> None:
    """The library checks an anchor like any CA: a root without keyUsage keyCertSign is no CA
    (a J-LIS root has it; an operator's mistake shows as issuer_not_a_ca)."""
    root = CardCA("Unit Root")
    name = root.cert.subject
    bare = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root.key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    root.cert = bare
    ca = CardCA("Unit Signature CA", parent=root)
    assert verify_with(root, ca, [root.crl(), ca.crl()]) is IdentityRefusal.ISSUER_NOT_A_CA
