"""The payment provider's status API, as payments asks it (決済代行の照会API).

Real providers answer "what happened to this payment?" (GOV.UK Pay: ``GET /v1/payments/{id}``);
payments' sweep asks it about every request still open past a grace period, so a payment whose
webhook was lost is found within minutes instead of at the next settlement. The answer lists
the provider's confirmation notices for the reference, the very bodies its webhook sends, and
payments records each through the webhook's own handler (``confirm_online_payment``).

The request is signed like a webhook, the other way round: ``X-Provider-Timestamp`` and
``X-Provider-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.GET <path>">`` with the shared
secret, which never travels.
"""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel, ConfigDict, Field

from contracts.payments import ProviderPaymentConfirmation
from services.payments import webhook


class ProviderPaymentStatus(BaseModel):
    """The provider's answer about one reference: every payment it took for it."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, max_length=40)
    notices: list[ProviderPaymentConfirmation] = Field(
        default_factory=list, description="One per payment taken, as its webhook sends it."
    )


def status_path(reference: str) -> str:
    return f"/payments/{reference}"


def signed_headers(
    secret: str, method: str, path: str, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        webhook.TIMESTAMP_HEADER: str(ts),
        webhook.SIGNATURE_HEADER: webhook.sign(secret, ts, f"{method} {path}".encode()),
    }


async def payment_status(
    client: httpx.AsyncClient, base_url: str, secret: str, reference: str
) -> ProviderPaymentStatus:
    """Ask the provider what it took for ``reference``; raises httpx errors and pydantic's
    ValidationError (a provider answering nonsense) to the caller."""
    path = status_path(reference)
    response = await client.get(
        base_url.rstrip("/") + path, headers=signed_headers(secret, "GET", path)
    )
    response.raise_for_status()
    return ProviderPaymentStatus.model_validate_json(response.content)
