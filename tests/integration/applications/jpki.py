"""A test PKI issuing My Number card-like signature certificates (made with `cryptography`).

``CardCA("root")`` is a self-signed root; ``CardCA("signature CA", parent=root)`` an
intermediate it issues. Both are CAs as J-LIS's are (basicConstraints cA, critical; keyUsage
keyCertSign and cRLSign; key identifiers) and publish CRLs of what they revoked. ``issue``
makes a citizen's signature certificate (keyUsage digitalSignature and nonRepudiation, as
JPKI's 署名用電子証明書), and ``Signer.sign`` signs a submission the way a frontend does: with
the challenge the service issued to the signed-in applicant (``challenge_for``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.applications.identity import canonical_content
from services.applications.signatures import DATE_OF_BIRTH

NOW = datetime.now(UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_usage(
    *,
    digital_signature: bool = False,
    non_repudiation: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=non_repudiation,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


SIGNING = key_usage(digital_signature=True, non_repudiation=True)
"""JPKI's signature certificate (署名用電子証明書)."""
AUTHENTICATION = key_usage(digital_signature=True)
"""JPKI's user-authentication certificate (利用者証明用電子証明書): proves a log-in only."""
CA_USAGE = key_usage(key_cert_sign=True, crl_sign=True)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    issuer_key: rsa.RSAPrivateKey,
    valid_days: tuple[int, int],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=valid_days[0]))
        .not_valid_after(NOW + timedelta(days=valid_days[1]))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class CardCA:
    name: str
    parent: CardCA | None = None
    """None: a self-signed root (a trust anchor)."""
    key: rsa.RSAPrivateKey = field(default_factory=_key)
    revoked: list[int] = field(default_factory=list)
    basic_constraints: bool = True
    """False: its certificate lacks basicConstraints (keyUsage still says keyCertSign)."""

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        issuer_name = self.parent.cert.subject if self.parent else subject
        issuer_key = self.parent.key if self.parent else self.key
        builder = _builder(subject, issuer_name, self.key.public_key(), issuer_key, (-365, 3650))
        if self.basic_constraints:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
        self.cert = builder.add_extension(CA_USAGE, critical=True).sign(issuer_key, hashes.SHA256())

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def intermediates(self) -> list[x509.Certificate]:
        """The CA certificates a signer of this CA sends after its own: up to the root, which
        the service already trusts."""
        return [self.cert, *self.parent.intermediates()] if self.parent else []

    def issue(
        self,
        name: str = "郡山 太郎",
        address: str = "福島県郡山市朝日一丁目23番7号",
        born: str = "19800401",
        *,
        valid_days: tuple[int, int] = (-30, 365 * 5),
        extra: list[x509.NameAttribute[Any]] | None = None,
        usage: x509.KeyUsage | None = SIGNING,
    ) -> Signer:
        """A citizen's certificate issued by this CA (keyUsage ``usage``; None: no keyUsage)."""
        key = _key()
        attrs = [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.STREET_ADDRESS, address),
            x509.NameAttribute(DATE_OF_BIRTH, born),
            *(extra or []),
        ]
        builder = _builder(
            x509.Name(attrs), self.cert.subject, key.public_key(), self.key, valid_days
        )
        if usage is not None:
            builder = builder.add_extension(usage, critical=True)
        return Signer(key, builder.sign(self.key, hashes.SHA256()), self.intermediates())

    def crl(self) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(NOW - timedelta(hours=1))
            .next_update(NOW + timedelta(days=1))
        )
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(NOW - timedelta(minutes=5))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


async def challenge_for(http: Any, headers: dict[str, str]) -> dict[str, Any]:
    """A challenge the service issues to the applicant of ``headers`` (step 1 of the flow)."""
    resp = await http.post("/identity/challenges", headers=headers)
    assert resp.status_code == 201, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    intermediates: list[x509.Certificate] = field(default_factory=list)

    def sign(
        self,
        body: dict[str, Any],
        challenge: dict[str, Any],
        chain: list[x509.Certificate] | None = None,
    ) -> dict[str, Any]:
        """``body`` with an ``identity`` signing it for the applicant and challenge of
        ``challenge`` (an answer of POST /identity/challenges), as a frontend does; the chain
        sent is this certificate and ``chain`` (default: its CA's intermediates)."""
        content = canonical_content(
            applicant=challenge["applicant"],
            challenge=challenge["challenge"],
            procedure_code=body["procedure_code"],
            channel=body.get("channel", "online"),
            form=body.get("form", {}),
        )
        signature = self.key.sign(content, padding.PKCS1v15(), hashes.SHA256())
        certs = [self.cert, *(self.intermediates if chain is None else chain)]
        return body | {
            "identity": {
                "challenge": challenge["challenge"],
                "signature": base64.b64encode(signature).decode(),
                "certificate_chain": [pem(c) for c in certs],
            }
        }

    def issue_as_if_a_ca(self, name: str = "偽 太郎") -> Signer:
        """A certificate this citizen's key "issues" to someone else: the citizen's
        certificate posing as a CA (it is not one: no basicConstraints cA, no keyCertSign)."""
        key = _key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.STREET_ADDRESS, "福島県郡山市朝日一丁目1番1号"),
            ]
        )
        cert = (
            _builder(subject, self.cert.subject, key.public_key(), self.key, (-1, 365))
            .add_extension(SIGNING, critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return Signer(key, cert, [self.cert, *self.intermediates])
