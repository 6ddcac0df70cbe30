"""The notifications service's own settings (environment variables ``NOTIFY_*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.settings import REQUIRED_IN_PRODUCTION, read_settings

SHIPPED_RULES = Path(__file__).parent / "rules.yaml"


class NotificationSettings(BaseSettings):
    """SMTP, webhooks, retries, rate limits, staff recipients, the DLQ watch and retention."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    smtp_host: str = Field(default="127.0.0.1", description="SMTP server (送信サーバ).")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, description="Upgrade with STARTTLS.")
    smtp_tls: bool = Field(default=False, description="Implicit TLS (port 465).")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the SMTP server's certificate."
    )
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    mail_from: str = Field(default="郡山市役所 <no-reply@city.koriyama.lg.jp>")
    message_id_domain: str = Field(default="cityhall.koriyama")

    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key shared with webhook receivers. Unset: webhooks cannot "
        "be signed, and a webhook delivery fails naming this variable (`cityhall up` makes "
        "one of its own).",
        json_schema_extra={REQUIRED_IN_PRODUCTION: True},
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    email_rate_per_s: float = Field(default=50.0, gt=0, description="Token bucket per channel.")
    webhook_rate_per_s: float = Field(default=50.0, gt=0)

    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_base_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)

    sender_batch: int = Field(default=100, ge=1, le=5000)
    sender_concurrency: int = Field(default=10, ge=1, le=500)
    sender_poll_s: float = Field(default=0.5, gt=0)
    claim_lease_s: float = Field(
        default=300.0, gt=0, description="A claimed notification is retried after this."
    )

    rules_file: Path = Field(default=SHIPPED_RULES)
    staff: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "finance_office": ["mailto:kaikei@city.koriyama.lg.jp"],
            "operators": ["mailto:cityhall-ops@city.koriyama.lg.jp"],
        },
        description="Staff group -> targets (mailto:... or https://... webhook), as JSON.",
    )
    portal_url: str = Field(default="https://www.city.koriyama.lg.jp/")

    dlq_threshold: int = Field(default=10, ge=1, description="Dead letters that call operators.")
    dlq_check_s: float = Field(default=30.0, gt=0)
    retention_days: float = Field(
        default=90.0, ge=0, description="Delivery log kept (0: for ever)."
    )
    retention_check_s: float = Field(default=3600.0, gt=0)

    @field_validator("staff", mode="before")
    @classmethod
    def _staff_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value


def load_notification_settings() -> NotificationSettings:
    """Read NOTIFY_*; a bad value stops start-up with one line per problem, as the runtime does."""
    return read_settings(NotificationSettings, "notifications")
