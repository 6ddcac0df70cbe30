"""Settings of the payments service only (the shared ones are in services.runtime.settings)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.service import ServiceContext
from services.runtime.settings import REQUIRED_IN_PRODUCTION, read_settings


class PaymentsSettings(BaseSettings):
    """Online payment, the provider's webhook and staff access. Environment names per field."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    provider_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PAYMENT_PROVIDER_SECRET"),
        description="Shared HMAC secret of the payment provider's webhooks; unset = refuse all.",
        json_schema_extra={REQUIRED_IN_PRODUCTION: True},
    )
    provider_url: str = Field(
        default="http://127.0.0.1:8090",
        validation_alias=AliasChoices("PAYMENT_PROVIDER_URL"),
        description="Where citizens are sent to pay (the provider's checkout).",
    )
    webhook_tolerance_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_WEBHOOK_TOLERANCE_S"),
        description="A webhook whose timestamp is further off than this is refused.",
    )
    request_ttl_s: float = Field(
        default=1800.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_REQUEST_TTL_S"),
        description="How long an application fee's payment request stays payable.",
    )
    expiry_sweep_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_EXPIRY_SWEEP_S"),
        description="How often expired payment requests are cancelled.",
    )
    sweep_interval_s: float = Field(
        default=15.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_SWEEP_INTERVAL_S"),
        description="How often the payment sweep looks for requests due a question to the "
        "provider.",
    )
    sweep_grace_s: float = Field(
        default=120.0,
        ge=0,
        validation_alias=AliasChoices("PAYMENT_SWEEP_GRACE_S"),
        description="A request is first asked about this long after it opened (its webhook "
        "normally comes within seconds).",
    )
    sweep_backoff_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_SWEEP_BACKOFF_S"),
        description="The wait after a request's first question, doubled after each one.",
    )
    sweep_backoff_max_s: float = Field(
        default=600.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_SWEEP_BACKOFF_MAX_S"),
        description="The longest wait between two questions about one request.",
    )
    sweep_horizon_s: float = Field(
        default=86400.0,
        ge=0,
        validation_alias=AliasChoices("PAYMENT_SWEEP_HORIZON_S"),
        description="How long after its expiry an unpaid request is still asked about.",
    )
    sweep_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=AliasChoices("PAYMENT_SWEEP_TIMEOUT_S"),
        description="HTTP timeout of one question to the provider's status endpoint.",
    )


def load_payments_settings() -> PaymentsSettings:
    """PAYMENT_* and PAYMENTS_*; a bad value stops start-up, one line per variable."""
    return read_settings(PaymentsSettings, "payments")


def payments_settings(ctx: ServiceContext) -> PaymentsSettings:
    """This service's own settings, read once per running service (at start-up)."""
    return ctx.provide(PaymentsSettings, load_payments_settings)
