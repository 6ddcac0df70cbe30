"""Settings of the applications service alone (the runtime's settings are shared)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ApplicationsSettings(BaseSettings):
    """Environment names are given with each field."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    staff_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("APPLICATIONS_STAFF_TOKENS"),
        description=(
            "Staff credentials (職員): comma-separated staff_id=token pairs; a staff request "
            "sends 'Authorization: Bearer <token>'. Empty: staff endpoints refuse everyone."
        ),
    )
    idempotency_retention_hours: float = Field(
        default=48.0,
        ge=24.0,
        validation_alias=AliasChoices("APPLICATIONS_IDEMPOTENCY_RETENTION_HOURS"),
        description="How long an Idempotency-Key and its response are kept (at least 24 h).",
    )

    @field_validator("staff_tokens", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            staff_id, sep, token = item.partition("=")
            if not sep or not staff_id.strip() or len(token.strip()) < 16:
                raise ValueError("expected staff_id=token pairs, tokens of 16+ characters")
            pairs[staff_id.strip()] = token.strip()
        return pairs
