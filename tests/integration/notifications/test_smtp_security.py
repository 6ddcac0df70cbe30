"""SMTP with STARTTLS and authentication, as a city's mail relay requires."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.notifications.conftest import RecordingSmtp
from tests.integration.notifications.test_email_delivery import register, submitted_by

USER, PASSWORD = b"cityhall", b"relay-secret"


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class SecureSmtp(RecordingSmtp):
    """Requires STARTTLS before anything else, then AUTH; records whether mail came that way."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        super().__init__(port)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert, key)
        self.sessions: list[tuple[bool, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        return await super().handle_DATA(server, session, envelope)

    def start(self) -> None:
        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (
                auth_data.login,
                auth_data.password,
            ) == (USER, PASSWORD)
            return AuthResult(success=ok, handled=False)  # let aiosmtpd answer 535

        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=self.tls,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
        )
        self._controller.start()


@pytest.fixture
def secure_smtp(tmp_path: Path, notify_env: pytest.MonkeyPatch) -> Iterator[SecureSmtp]:
    cert, key = self_signed(tmp_path)
    server = SecureSmtp(free_port(), cert, key)
    server.start()
    notify_env.setenv("NOTIFY_SMTP_PORT", str(server.port))
    notify_env.setenv("NOTIFY_SMTP_STARTTLS", "true")
    notify_env.setenv("NOTIFY_SMTP_CA_FILE", str(cert))
    notify_env.setenv("NOTIFY_SMTP_USERNAME", USER.decode())
    try:
        yield server
    finally:
        server.stop()


async def test_mail_goes_over_starttls_with_authentication(
    start_service: Any,
    secure_smtp: SecureSmtp,
    notify_env: pytest.MonkeyPatch,
    js: JetStreamContext,
    namespace: str,
) -> None:
    notify_env.setenv("NOTIFY_SMTP_PASSWORD", PASSWORD.decode())
    svc = await start_service("notifications")
    applicant = await register(svc, "taro@example.jp")
    await publish_envelope(js, namespace, submitted_by(applicant))

    async def mailed() -> bool:
        return len(secure_smtp.messages) == 1

    await wait_for(mailed)
    assert secure_smtp.sessions == [(True, True)]


async def test_a_refused_password_is_retried_not_given_up(
    start_service: Any,
    secure_smtp: SecureSmtp,
    notify_env: pytest.MonkeyPatch,
    js: JetStreamContext,
    namespace: str,
) -> None:
    notify_env.setenv("NOTIFY_SMTP_PASSWORD", "wrong")
    svc = await start_service("notifications")
    applicant = await register(svc, "taro@example.jp")
    await publish_envelope(js, namespace, submitted_by(applicant))

    async def retried() -> Any:
        return await svc.pool.fetchrow(
            "SELECT status, attempts, last_error FROM notifications WHERE attempts >= 2"
        )

    row = await wait_for(retried)
    assert row["status"] == "failed"
    assert "authentication refused: 535" in row["last_error"]
    assert secure_smtp.messages == []
