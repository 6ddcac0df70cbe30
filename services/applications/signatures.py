"""Verifying a group-2 signature (署名用電子証明書): the signature, its certification path
and the revocation of every certificate on that path, against the operator's trust anchors and
CRLs (``TrustConfig``); ``verify`` answers a ``VerifiedIdentity`` or raises ``IdentityRefused``.
No I/O. What it checks:

1. the signature, by the leaf certificate's RSA key, over the bytes rebuilt from the request,
   so one made for another account, challenge or form does not verify;
2. the certification path, built and validated by ``cryptography.x509.verification`` (its
   client verifier, RFC 5280 path building) from the leaf through the intermediates given to a
   configured trust anchor, at the time of the check: every certificate within its validity
   period, every issuer a CA (basicConstraints cA, keyUsage keyCertSign; the library also
   refuses a CA without basicConstraints on its own), the leaf a signing certificate (keyUsage
   digitalSignature and nonRepudiation, neither keyCertSign nor cRLSign, not a CA);
3. revocation of **every** certificate of that path but the trust anchor, against the
   operator's CRLs: the library does not check revocation (``_check_revocation``).

The library answers a refused path with one ``VerificationError`` whose text names
certificates (their subjects, which hold a citizen's name); that text is neither shown nor
logged. The reason a citizen is told is named by ``_why_no_path``, from the same rules
(``_signing_usage_problem``, ``_ca_problem``), which the library enforces through
``ExtensionPolicy`` callbacks.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
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

from services.applications.identity import IdentityRefusal, IdentityRefused, VerifiedIdentity

DATE_OF_BIRTH = ObjectIdentifier("1.3.6.1.5.5.7.9.1")
MAX_CHAIN = 5
MAX_INTERMEDIATES = 3
"""CA certificates allowed between the leaf and the trust anchor (J-LIS: none or one)."""


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


Refuse = Callable[[IdentityRefusal, str], IdentityRefused]
"""Makes the refusal ``verify`` raises (naming the certificate once its issuer is trusted)."""


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

    _check_signature(leaf, content, signature_b64, refuse)
    path = _certification_path(chain, trust, now, refuse)
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


def _check_signature(
    leaf: x509.Certificate, content: bytes, signature_b64: str, refuse: Refuse
) -> None:
    """``signature_b64`` is the leaf's RSA key's signature over ``content``, and the leaf is a
    signature certificate."""
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


def _certification_path(
    chain: list[x509.Certificate], trust: TrustConfig, now: datetime, refuse: Refuse
) -> list[x509.Certificate]:
    """The library's valid path from the leaf to a trust anchor (leaf first, anchor last)."""
    if not trust.anchors:
        raise refuse(IdentityRefusal.UNKNOWN_CA, "no trusted CA is configured")
    try:
        return _verifier(trust, now).verify(chain[0], chain[1:]).chain
    except VerificationError as exc:
        reason, message = _why_no_path(chain, trust, now)
        raise refuse(reason, message) from exc


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
