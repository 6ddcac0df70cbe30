"""Group-2 identity (本人確認) with the My Number card's signature certificate (署名用電子証明書).

An online application for a group-2 procedure carries a detached signature over its canonical
content and the signer's certificate chain, as a JPKI signature certificate does. This module
verifies, without I/O:

1. the signature: RSA PKCS#1 v1.5 with SHA-256 (SHA256withRSA) by the leaf certificate's key;
2. the chain: each certificate signed by the next, ending at a configured trust anchor (the
   J-LIS CA in production; tests make their own CA);
3. the validity period of every certificate in the chain, at the time of the check;
4. revocation: the leaf's serial is not on the operator-configured CRL (signed by its issuer).

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
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

DATE_OF_BIRTH = ObjectIdentifier("1.3.6.1.5.5.7.9.1")
MAX_CHAIN = 5


class IdentityRefusal(StrEnum):
    """Why a signature was not accepted."""

    SIGNATURE_REQUIRED = "signature_required"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_CA = "unknown_ca"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"


class IdentityRefused(ValueError):
    """The group-2 identity check failed (HTTP 422 at ``identity``, with the reason)."""

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
    """The operator's trust anchors and revocation list (APPLICATIONS_JPKI_*)."""

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


def canonical_content(procedure_code: str, channel: str, form: dict[str, Any]) -> bytes:
    """The bytes a group-2 applicant signs: the application's content as canonical JSON.

    ``{"channel":…,"form":{…},"procedure_code":…}`` with sorted keys, no spaces, UTF-8 (not
    ASCII-escaped). The frontend builds the same bytes for the card to sign.
    """
    content = {"procedure_code": procedure_code, "channel": channel, "form": form}
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _issuer_text(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string()


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


def _load_chain(chain_pem: list[str]) -> list[x509.Certificate]:
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


def _check_period(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise IdentityRefused(
            IdentityRefusal.EXPIRED,
            f"the {what} certificate is not valid now (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})",
            serial=format(cert.serial_number, "x"),
            issuer=_issuer_text(cert),
        )


def verify(
    content: bytes,
    signature_b64: str,
    chain_pem: list[str],
    trust: TrustConfig,
    now: datetime | None = None,
) -> VerifiedIdentity:
    """Verify a detached SHA256withRSA signature and its chain; raise ``IdentityRefused``."""
    now = now or datetime.now(UTC)
    chain = _load_chain(chain_pem)
    leaf = chain[0]
    serial = format(leaf.serial_number, "x")
    issuer = _issuer_text(leaf)

    def refuse(reason: IdentityRefusal, message: str) -> IdentityRefused:
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
            IdentityRefusal.BAD_SIGNATURE, "the signature does not match the content"
        ) from exc

    # The chain: each certificate issued by the next one given, or by a trust anchor.
    anchor_keys = {a.fingerprint(hashes.SHA256()): a for a in trust.anchors}
    current = leaf
    issuer_of_leaf: x509.Certificate | None = None
    for depth in range(len(chain) + 1):
        _check_period(current, now, "signer's" if depth == 0 else "CA")
        anchor = next((a for a in trust.anchors if _issued_by(current, a)), None)
        if anchor is not None:
            _check_period(anchor, now, "trust anchor")
            if depth == 0:
                issuer_of_leaf = anchor
            break
        if current.fingerprint(hashes.SHA256()) in anchor_keys:
            break
        parent = chain[depth + 1] if depth + 1 < len(chain) else None
        if parent is None or not _issued_by(current, parent):
            raise refuse(
                IdentityRefusal.UNKNOWN_CA,
                f"the certificate chain does not lead to a trusted CA (issuer {issuer})",
            )
        if depth == 0:
            issuer_of_leaf = parent
        current = parent
    else:  # pragma: no cover - the loop always breaks or raises
        raise refuse(IdentityRefusal.UNKNOWN_CA, "certificate chain too long")
    assert issuer_of_leaf is not None

    _check_revocation(leaf, issuer_of_leaf, trust, now, refuse)
    name, address, birth_date = verified_attributes(leaf)
    return VerifiedIdentity(
        name=name,
        address=address,
        birth_date=birth_date,
        certificate_serial=serial,
        issuer=issuer,
        checked_at=now,
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_revocation(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    trust: TrustConfig,
    now: datetime,
    refuse: Any,
) -> None:
    crl = next(
        (
            c
            for c in trust.crls
            if c.issuer == issuer.subject and c.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        ),
        None,
    )
    if crl is None:
        raise refuse(
            IdentityRefusal.REVOCATION_UNKNOWN,
            "no revocation list (CRL) from the certificate's issuer is configured",
        )
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        raise refuse(
            IdentityRefusal.REVOCATION_UNKNOWN,
            f"the revocation list expired at {crl.next_update_utc:%Y-%m-%d %H:%M} UTC",
        )
    if crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
        raise refuse(IdentityRefusal.REVOKED, "the signer's certificate has been revoked")
