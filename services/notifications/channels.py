"""The outside world: e-mail over SMTP (aiosmtplib) and signed webhooks (httpx).

Each channel sends one message and returns the provider's message id, or raises
``TemporaryFailure`` (try again later) or ``PermanentFailure`` (trying again cannot help).

Webhook signature (for the city systems that receive them): header
``X-Cityhall-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
A receiver recomputes it with ``verify_signature`` and refuses a timestamp older than its
tolerance, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

import aiosmtplib
import httpx

from services.notifications.domain import PermanentFailure, TemporaryFailure
from services.notifications.settings import NotificationSettings
from services.notifications.store import Claimed

SIGNATURE_HEADER = "X-Cityhall-Signature"
NOTIFICATION_ID_HEADER = "X-Cityhall-Notification-Id"


class Channel(Protocol):
    async def send(self, n: Claimed) -> str: ...


# -- e-mail -----------------------------------------------------------------------------------


def message_id(n: Claimed, domain: str) -> str:
    """Stable per notification, so a receiving system can recognise a repeat."""
    return f"<{n.id.hex}@{domain}>"


def email_message(n: Claimed, settings: NotificationSettings) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = n.address
    msg["Subject"] = n.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(n, settings.message_id_domain)
    msg["Content-Language"] = n.language.value
    msg[NOTIFICATION_ID_HEADER] = str(n.id)
    msg.set_content(n.body_text)
    msg.add_alternative(n.body_html, subtype="html")
    return msg


@dataclass
class EmailChannel:
    """SMTP with kept-open connections: connecting, EHLO, STARTTLS and AUTH cost more than
    sending one message, so each connection carries many (at most one per send in flight).
    A connection the server closed while idle is replaced once, transparently."""

    settings: NotificationSettings
    _idle: list[aiosmtplib.SMTP] = field(default_factory=list)

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            start_tls=s.smtp_starttls,
            use_tls=s.smtp_tls,
            timeout=s.smtp_timeout_s,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
        )

    async def send(self, n: Claimed) -> str:
        msg = email_message(n, self.settings)
        try:
            await self._send_on_a_connection(msg)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the recipient: retry (until operators fix the settings)
            # rather than give up on every citizen's mail at once.
            raise TemporaryFailure(
                f"SMTP authentication refused: {exc.code} {exc.message}"
            ) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"SMTP {r.code} {r.message}" for r in exc.recipients)
            if all(500 <= c < 600 for c in codes):
                raise PermanentFailure(text) from exc
            raise TemporaryFailure(text) from exc
        except aiosmtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentFailure(text) from exc
            raise TemporaryFailure(text) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc
        return str(msg["Message-ID"])

    async def _send_on_a_connection(self, msg: EmailMessage) -> None:
        reused = bool(self._idle)
        client = self._idle.pop() if reused else self._new_client()
        try:
            if not client.is_connected:
                await client.connect()
            await client.send_message(msg)
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError):
            # The server answered (and aiosmtplib reset the transaction): still usable.
            self._keep(client)
            raise
        except aiosmtplib.SMTPServerDisconnected:
            client.close()
            if not reused:
                raise
            await self._send_on_a_connection_fresh(msg)
            return
        except BaseException:
            client.close()
            raise
        self._keep(client)

    async def _send_on_a_connection_fresh(self, msg: EmailMessage) -> None:
        """The kept connection had been closed by the server: one fresh try."""
        client = self._new_client()
        try:
            await client.connect()
            await client.send_message(msg)
        except BaseException:
            client.close()
            raise
        self._keep(client)

    def _keep(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            self._idle.append(client)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.quit()
            client.close()


# -- webhooks -------------------------------------------------------------------------------


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class SignatureRefused(ValueError):
    """A webhook request whose signature is missing, wrong, or too old (a replay)."""


def verify_signature(
    secret: bytes,
    header: str | None,
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> int:
    """Check a webhook's signature; return its timestamp, or raise SignatureRefused."""
    if not header:
        raise SignatureRefused(f"no {SIGNATURE_HEADER} header")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError) as exc:
        raise SignatureRefused("malformed signature header") from exc
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance_s:
        raise SignatureRefused(f"timestamp {age:.0f}s old (tolerance {tolerance_s:.0f}s): replay?")
    if age < -tolerance_s:
        raise SignatureRefused("timestamp in the future")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise SignatureRefused("signature does not match")
    return timestamp


def webhook_body(n: Claimed) -> bytes:
    return json.dumps(
        {
            "notification_id": str(n.id),
            "rule": n.rule,
            "cause_event_id": n.cause_event_id,
            "language": n.language.value,
            "subject": n.subject,
            "text": n.body_text,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


@dataclass
class WebhookChannel:
    settings: NotificationSettings
    client: httpx.AsyncClient

    async def send(self, n: Claimed) -> str:
        body = webhook_body(n)
        if self.settings.webhook_secret is None:
            raise PermanentFailure("NOTIFY_WEBHOOK_SECRET is not set: webhooks cannot be signed")
        secret = self.settings.webhook_secret.get_secret_value().encode()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            NOTIFICATION_ID_HEADER: str(n.id),
        }
        try:
            response = await self.client.post(
                n.address, content=body, headers=headers, timeout=self.settings.webhook_timeout_s
            )
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"webhook timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TemporaryFailure(f"webhook unreachable: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise TemporaryFailure(f"webhook answered {status}")
        if status >= 400:
            raise PermanentFailure(f"webhook answered {status}: {response.text[:200]}")
        return _provider_id(response) or str(n.id)


def _provider_id(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("id"), str | int):
        return str(data["id"])
    header: str | None = response.headers.get("x-message-id")
    return header
