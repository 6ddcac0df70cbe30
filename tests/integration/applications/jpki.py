"""A test CA issuing My Number card-like signature certificates (made with `cryptography`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.applications.identity import DATE_OF_BIRTH, canonical_content

NOW = datetime.now(UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class CardCA:
    name: str
    key: rsa.RSAPrivateKey = field(default_factory=_key)
    revoked: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=365))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str = "郡山 太郎",
        address: str = "福島県郡山市朝日一丁目23番7号",
        born: str = "19800401",
        *,
        valid_days: tuple[int, int] = (-30, 365 * 5),
        extra: list[x509.NameAttribute[Any]] | None = None,
    ) -> Signer:
        key = _key()
        attrs = [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.STREET_ADDRESS, address),
            x509.NameAttribute(DATE_OF_BIRTH, born),
            *(extra or []),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW + timedelta(days=valid_days[0]))
            .not_valid_after(NOW + timedelta(days=valid_days[1]))
            .sign(self.key, hashes.SHA256())
        )
        return Signer(key, cert)

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


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    def sign(
        self, body: dict[str, Any], chain: list[x509.Certificate] | None = None
    ) -> dict[str, Any]:
        """``body`` with an ``identity`` signing its canonical content."""
        content = canonical_content(
            body["procedure_code"], body.get("channel", "online"), body.get("form", {})
        )
        signature = self.key.sign(content, padding.PKCS1v15(), hashes.SHA256())
        certs = [self.cert, *(chain or [])]
        return body | {
            "identity": {
                "signature": base64.b64encode(signature).decode(),
                "certificate_chain": [
                    c.public_bytes(serialization.Encoding.PEM).decode() for c in certs
                ],
            }
        }
