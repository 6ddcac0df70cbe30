"""The payment provider's webhook signature: HMAC-SHA256 over ``<timestamp>.<body>``.

The provider sends ``X-Provider-Timestamp`` (Unix seconds) and ``X-Provider-Signature:
v1=<hex>``. Payments refuses a bad signature, a timestamp outside the tolerance (an old
message replayed) and an event id it has seen before (a replay inside the tolerance).
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Provider-Timestamp"
SIGNATURE_HEADER = "X-Provider-Signature"


class WebhookRefused(Exception):
    """A webhook payments will not act on (the reason is safe to show the caller)."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(
    secret: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_s: float,
) -> None:
    """Raise WebhookRefused unless the signature is right and the timestamp is recent."""
    if not timestamp_header or not signature_header:
        raise WebhookRefused(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        raise WebhookRefused(f"{TIMESTAMP_HEADER} is not a Unix time") from None
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected, signature_header.strip()):
        raise WebhookRefused("signature does not match")
    if abs(now - timestamp) > tolerance_s:
        raise WebhookRefused(f"timestamp is more than {tolerance_s:.0f} s away from now")
