"""Group-2 identity (本人確認) with the My Number card's signature certificate (署名用電子証明書).

A signature proves who applied, for this submission, once. An online application for a group-2
procedure carries a detached SHA256withRSA signature over ``canonical_content``: the
applicant's account (the gateway token's ``sub``), a server-issued single-use challenge
(``Challenge``, a few minutes' life) and the application itself; with it, the signer's
certificate chain. This module holds the rules, without I/O:

1. the challenge: issued to this applicant, not used, not expired (``check_challenge``);
2. the signature, by the leaf certificate's RSA key, over the bytes rebuilt from the request,
   so one made for another account, challenge or form does not verify;
3. the certification path, built and validated by ``cryptography.x509.verification`` (its
   client verifier, RFC 5280 path building) from the leaf through the intermediates given to a
   configured trust anchor, at the time of the check: every certificate within its validity
   period, every issuer a CA (basicConstraints cA, keyUsage keyCertSign; the library also
   refuses a CA without basicConstraints on its own), the leaf a signing certificate (keyUsage
   digitalSignature and nonRepudiation, neither keyCertSign nor cRLSign, not a CA);
4. revocation of **every** certificate of that path but the trust anchor, against the
   operator's CRLs: the library does not check revocation (``_check_revocation``).

The library answers a refused path with one ``VerificationError`` whose text names
certificates (their subjects, which hold a citizen's name); that text is neither shown nor
logged. The reason a citizen is told is named by ``_why_no_path``, from the same rules
(``_signing_usage_problem``, ``_ca_problem``), which the library enforces through
``ExtensionPolicy`` callbacks.

What is kept is only what the procedure needs: the verified name, address and birth date, plus
the certificate's serial, issuer, the time and the result of the check. The My Number (個人番号)
is not in a JPKI signature certificate, and nothing here reads, keeps or logs any other
attribute a certificate may carry.

Where the attributes are: the subject's commonName (name), streetAddress (address) and
``id-pda-dateOfBirth`` (1.3.6.1.5.5.7.9.1, ``YYYYMMDD``). The real JPKI certificate carries the
four basic items in subjectAltName otherNames; reading those is the one change a production
deployment needs (see ``verified_attributes``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

DATE_OF_BIRTH = ObjectIdentifier("1.3.6.1.5.5.7.9.1")
MAX_CHAIN = 5
MAX_INTERMEDIATES = 3
"""CA certificates allowed between the leaf and the trust anchor (J-LIS: none or one)."""
SIGNING_PURPOSE = "koriyama-cityhall/submit-application/v1"
"""What the signed bytes are for: a signature made for anything else never matches them."""
CHALLENGE_BYTES = 32
CHALLENGE_PATTERN = r"^[A-Za-z0-9_-]{43}$"
"""A challenge as issued: 32 random bytes, base64url without padding."""


class IdentityRefusal(StrEnum):
    """Why a signature was not accepted (``identity.<value>`` in the HTTP answer)."""

    SIGNATURE_REQUIRED = "signature_required"
    SIGN_IN_REQUIRED = "sign_in_required"
    """A signed application binds the applicant's account: it needs the applicant's token."""
    MALFORMED = "malformed"
    CHALLENGE_UNKNOWN = "challenge_unknown"
    CHALLENGE_FOR_ANOTHER_APPLICANT = "challenge_for_another_applicant"
    CHALLENGE_USED = "challenge_used"
    CHALLENGE_EXPIRED = "challenge_expired"
    SIGNATURE_INVALID = "signature_invalid"
    CERTIFICATE_NOT_FOR_SIGNING = "certificate_not_for_signing"
    ISSUER_NOT_A_CA = "issuer_not_a_ca"
    UNKNOWN_CA = "unknown_ca"
    PATH_INVALID = "path_invalid"
    EXPIRED = "expired"
    CERTIFICATE_REVOKED = "certificate_revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"


class IdentityRefused(ValueError):
    """The group-2 identity check failed (HTTP 422 at ``identity``, with the reason; 401 for
    ``sign_in_required``). ``serial`` and ``issuer`` name the signer's certificate when its
    issuer is a trusted CA, else they are None."""

    def __init__(
        self,
        reason: IdentityRefusal,
        message: str,
        *,
        serial: str | None = None,
        issuer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.serial = serial
        self.issuer = issuer


@dataclass(frozen=True)
class VerifiedIdentity:
    """What is kept of a successful check: the verified attributes and the check itself."""

    name: str
    address: str
    birth_date: date | None
    certificate_serial: str
    issuer: str
    checked_at: datetime
    result: str = "verified"


@dataclass(frozen=True)
class TrustConfig:
    """The operator's trust anchors and revocation lists (APPLICATIONS_JPKI_*)."""

    anchors: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @classmethod
    def from_pem(cls, anchors_pem: bytes, crl_data: bytes | None = None) -> TrustConfig:
        anchors = tuple(x509.load_pem_x509_certificates(anchors_pem))
        crls: tuple[x509.CertificateRevocationList, ...] = ()
        if crl_data:
            if b"-----BEGIN X509 CRL-----" in crl_data:
                crls = tuple(
                    x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + part)
                    for part in crl_data.split(b"-----BEGIN X509 CRL-----")[1:]
                )
            else:
                crls = (x509.load_der_x509_crl(crl_data),)
        return cls(anchors, crls)

    @functools.cached_property
    def store(self) -> Store:
        """The anchors as the library's trust store (built once per configuration)."""
        return Store(list(self.anchors))


# -- the challenge (チャレンジ): what makes a signature single-use ------------------------------


@dataclass(frozen=True)
class Challenge:
    """A random value the service issues to one applicant, to be signed within its lifetime
    and used by one submission only."""

    value: str
    applicant_id: uuid.UUID
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


def new_challenge(applicant_id: uuid.UUID, now: datetime, lifetime: timedelta) -> Challenge:
    """A fresh challenge for ``applicant_id``, valid for ``lifetime`` from ``now``."""
    return Challenge(
        value=secrets.token_urlsafe(CHALLENGE_BYTES),
        applicant_id=applicant_id,
        issued_at=now,
        expires_at=now + lifetime,
    )


def check_challenge(found: Challenge | None, applicant_id: uuid.UUID, now: datetime) -> Challenge:
    """The challenge a submission names, if this applicant may use it now.

    Whose it is comes first: a signature captured from another account is refused as such,
    whether or not its owner has used it yet.
    """
    if found is None:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_UNKNOWN,
            "no such challenge: get one with POST /identity/challenges and sign again",
        )
    if found.applicant_id != applicant_id:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_FOR_ANOTHER_APPLICANT,
            "this challenge was issued to another account: a signature binds the account "
            "that asked for its challenge",
        )
    if found.used_at is not None:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_USED,
            "this challenge was already used by a submission: get a new one and sign again",
        )
    if now >= found.expires_at:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_EXPIRED,
            f"this challenge expired at {found.expires_at:%Y-%m-%d %H:%M:%S} UTC: get a new "
            "one and sign again",
        )
    return found


def sign_in_required() -> IdentityRefused:
    return IdentityRefused(
        IdentityRefusal.SIGN_IN_REQUIRED,
        "a signed application is filed by the signed-in applicant: send the login gateway's "
        "token (Authorization: Bearer <jwt>) with POST /identity/challenges and the submission",
    )


def canonical_content(
    *, applicant: str, challenge: str, procedure_code: str, channel: str, form: dict[str, Any]
) -> bytes:
    """The bytes a group-2 applicant signs: who, which challenge, and the application.

    The JSON object ``{"applicant":…,"challenge":…,"channel":…,"form":{…},
    "procedure_code":…,"purpose":"koriyama-cityhall/submit-application/v1"}`` with sorted keys,
    no spaces, UTF-8 (not ASCII-escaped); ``applicant`` is the account id (``sub``) in its
    lower-case hyphenated UUID form. The frontend builds the same bytes for the card to sign.

    >>> canonical_content(applicant="5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f", challenge="c",
    ...     procedure_code="KOSEKI_TOHON", channel="online", form={"copies": 1})[:60]
    b'{"applicant":"5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f","challen'
    """
    content = {
        "applicant": applicant,
        "challenge": challenge,
        "channel": channel,
        "form": form,
        "procedure_code": procedure_code,
        "purpose": SIGNING_PURPOSE,
    }
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


# -- the certificate ----------------------------------------------------------------------------


def _issuer_text(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string()


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _attribute(cert: x509.Certificate, oid: ObjectIdentifier) -> str | None:
    found = cert.subject.get_attributes_for_oid(oid)
    if not found:
        return None
    value = found[0].value
    return value if isinstance(value, str) else value.decode()


def verified_attributes(cert: x509.Certificate) -> tuple[str, str, date | None]:
    """Name, address and birth date from a verified certificate; nothing else is read."""
    name = _attribute(cert, NameOID.COMMON_NAME)
    address = _attribute(cert, NameOID.STREET_ADDRESS)
    if not name or not address:
        raise IdentityRefused(IdentityRefusal.MALFORMED, "the certificate holds no name or address")
    born = _attribute(cert, DATE_OF_BIRTH)
    birth_date = None
    if born:
        try:
            birth_date = datetime.strptime(born[:8], "%Y%m%d").date()
        except ValueError:
            birth_date = None
    return name, address, birth_date


def _load_chain(chain_pem: Sequence[str]) -> list[x509.Certificate]:
    if not chain_pem or len(chain_pem) > MAX_CHAIN:
        raise IdentityRefused(
            IdentityRefusal.MALFORMED, f"certificate_chain: 1 to {MAX_CHAIN} PEM certificates"
        )
    try:
        return [x509.load_pem_x509_certificate(pem.encode()) for pem in chain_pem]
    except ValueError as exc:
        raise IdentityRefused(
            IdentityRefusal.MALFORMED, "certificate_chain: not PEM certificates"
        ) from exc


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise IdentityRefused(
            IdentityRefusal.MALFORMED, "a certificate's extensions cannot be read"
        ) from exc


def _signing_usage_problem(usage: x509.KeyUsage | None) -> str | None:
    """Why a leaf with this keyUsage cannot sign an application, or None.

    JPKI's signature certificate (署名用電子証明書) asserts digitalSignature and nonRepudiation
    (contentCommitment); its user-authentication certificate (利用者証明用電子証明書) asserts
    digitalSignature only and proves a log-in, not consent to a document, so both are
    required. A key that may sign certificates or CRLs is a CA's, never a citizen's.
    """
    if usage is None:
        return "the certificate has no keyUsage"
    if not (usage.digital_signature and usage.content_commitment):
        return (
            "its keyUsage lacks digitalSignature and nonRepudiation (not a signature certificate)"
        )
    if usage.key_cert_sign or usage.crl_sign:
        return "its keyUsage allows signing certificates or CRLs"
    return None


def _ca_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not issue certificates, or None (basicConstraints cA, keyCertSign)."""
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        return "basicConstraints does not make it a CA"
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        return "its keyUsage does not allow keyCertSign"
    return None


class _PathRule(ValueError):
    """Raised inside the library's extension callbacks: the path is refused."""


def _ee_key_usage(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if (problem := _signing_usage_problem(usage)) is not None:
        raise _PathRule(problem)


def _ee_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, constraints: x509.BasicConstraints | None
) -> None:
    if constraints is not None and constraints.ca:
        raise _PathRule("the signer's certificate is a CA certificate")


def _ca_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, constraints: x509.BasicConstraints
) -> None:
    if not constraints.ca:
        raise _PathRule("basicConstraints does not make it a CA")


def _ca_key_usage(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.key_cert_sign:
        raise _PathRule("its keyUsage does not allow keyCertSign")


# Extension policies: the library's own CA/B Forum defaults are for TLS (a subjectAltName with a
# host name, serverAuth/clientAuth EKU); a JPKI path is checked against these rules instead.
# They apply to the trust anchor too. basicConstraints may be marked either way: what it says
# is checked here whatever its criticality. Unlisted extensions may be present unless critical
# (the library refuses an unknown critical extension in any case); extendedKeyUsage is not
# required (JPKI's certificates carry none).
_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ca_basic_constraints)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
)
_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _ee_key_usage)
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ee_basic_constraints)
)


def _verifier(trust: TrustConfig, now: datetime) -> ClientVerifier:
    return (
        PolicyBuilder()
        .store(trust.store)
        .time(now)
        .max_chain_depth(MAX_INTERMEDIATES)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )


def verify(
    content: bytes,
    signature_b64: str,
    chain_pem: Sequence[str],
    trust: TrustConfig,
    now: datetime | None = None,
) -> VerifiedIdentity:
    """Verify a detached SHA256withRSA signature, its certification path and the revocation of
    every certificate on it; raise ``IdentityRefused``."""
    now = now or datetime.now(UTC)
    chain = _load_chain(chain_pem)
    leaf = chain[0]
    serial, issuer = _serial(leaf), _issuer_text(leaf)
    # A refusal names the certificate by serial and issuer only once its issuer is known to be
    # a trusted CA: until then both are whatever the sender wrote (a name, even a My Number).
    issuer_trusted = leaf.issuer in {a.subject for a in trust.anchors}

    def refuse(reason: IdentityRefusal, message: str) -> IdentityRefused:
        if not issuer_trusted:
            return IdentityRefused(reason, message)
        return IdentityRefused(reason, message, serial=serial, issuer=issuer)

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise refuse(IdentityRefusal.MALFORMED, "signature: not base64") from exc
    key = leaf.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise refuse(IdentityRefusal.MALFORMED, "the signer's key is not RSA")
    try:
        key.verify(signature, content, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise refuse(
            IdentityRefusal.SIGNATURE_INVALID,
            "the signature does not match this applicant, challenge and application",
        ) from exc
    if (problem := _signing_usage_problem(_extension(leaf, x509.KeyUsage))) is not None:
        raise refuse(
            IdentityRefusal.CERTIFICATE_NOT_FOR_SIGNING,
            f"the certificate is not a signature certificate (署名用電子証明書): {problem}",
        )

    if not trust.anchors:
        raise refuse(IdentityRefusal.UNKNOWN_CA, "no trusted CA is configured")
    try:
        path = _verifier(trust, now).verify(leaf, chain[1:]).chain
    except VerificationError as exc:
        reason, message = _why_no_path(chain, trust, now)
        raise refuse(reason, message) from exc
    issuer_trusted = True

    _check_revocation(path, trust, now, refuse)
    name, address, birth_date = verified_attributes(leaf)
    return VerifiedIdentity(
        name=name,
        address=address,
        birth_date=birth_date,
        certificate_serial=serial,
        issuer=issuer,
        checked_at=now,
    )


def _issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _outside_validity(cert: x509.Certificate, now: datetime) -> bool:
    return not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc)


def _why_no_path(
    chain: list[x509.Certificate], trust: TrustConfig, now: datetime
) -> tuple[IdentityRefusal, str]:
    """The reason to tell for a path the library refused (it names none we may show).

    Only a diagnosis: whether a path is valid is the library's decision alone."""
    leaf = chain[0]
    if _outside_validity(leaf, now):
        return IdentityRefusal.EXPIRED, (
            f"the signer's certificate is not valid now (valid "
            f"{leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d})"
        )
    for child in chain:
        for parent in [*chain, *trust.anchors]:
            if parent is child or not _issued(child, parent):
                continue
            if (problem := _ca_problem(parent)) is not None:
                return IdentityRefusal.ISSUER_NOT_A_CA, (
                    f"a certificate in the chain (serial {_serial(parent)}) issued another but "
                    f"is not a CA: {problem}"
                )
            if _outside_validity(parent, now):
                return IdentityRefusal.EXPIRED, (
                    f"the CA certificate {parent.subject.rfc4514_string()} is not valid now"
                )
    anchor_names = {a.subject for a in trust.anchors}
    if not any(c.issuer in anchor_names or c.subject in anchor_names for c in chain):
        return IdentityRefusal.UNKNOWN_CA, (
            f"the certificate chain does not lead to a trusted CA (issuer {_issuer_text(leaf)})"
        )
    return IdentityRefusal.PATH_INVALID, (
        "no valid certification path to a trusted CA: the chain breaks the path rules "
        "(signatures, names, key sizes, path length or extensions)"
    )


def _check_revocation(
    path: Sequence[x509.Certificate], trust: TrustConfig, now: datetime, refuse: Any
) -> None:
    """No certificate of ``path`` (leaf first, trust anchor last) but the anchor is revoked.

    Each is looked up in a current CRL (``nextUpdate`` not passed, ``thisUpdate`` not ahead)
    signed by its issuer in the path, whose keyUsage allows cRLSign; with none, the answer is
    "revocation unknown", never "valid". An anchor is trusted by configuration: to distrust
    one, the operator removes it.
    """
    for depth, (cert, issuer) in enumerate(itertools.pairwise(path)):
        what = (
            "the signer's certificate"
            if depth == 0
            else f"the CA certificate {cert.subject.rfc4514_string()}"
        )
        usage = _extension(issuer, x509.KeyUsage)
        crls = [
            c
            for c in trust.crls
            if c.issuer == issuer.subject
            and (usage is None or usage.crl_sign)
            and c.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            and c.last_update_utc <= now
            and (c.next_update_utc is None or now <= c.next_update_utc)
        ]
        if not crls:
            raise refuse(
                IdentityRefusal.REVOCATION_UNKNOWN,
                f"no current revocation list (CRL) from the issuer of {what} "
                f"({issuer.subject.rfc4514_string()}) is configured",
            )
        if any(c.get_revoked_certificate_by_serial_number(cert.serial_number) for c in crls):
            raise refuse(IdentityRefusal.CERTIFICATE_REVOKED, f"{what} has been revoked")
