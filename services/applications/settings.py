"""Settings of the applications service alone (the runtime's settings are shared)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.applications.identity import TrustConfig


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

    jpki_trust_anchors: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("APPLICATIONS_JPKI_TRUST_ANCHORS"),
        description=(
            "PEM file of the CA certificates group-2 signatures must chain to (J-LIS). "
            "Unset: group-2 online applications are refused (unknown CA)."
        ),
    )
    jpki_crl: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("APPLICATIONS_JPKI_CRL"),
        description="CRL file (PEM or DER) of those CAs; re-read when the file changes.",
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


def trust_config(settings: ApplicationsSettings) -> TrustConfig:
    """The trust anchors and CRL, re-read when either file changes (the operator updates the
    CRL in place)."""
    stamp = tuple(
        (str(p), p.stat().st_mtime_ns) if p is not None and p.exists() else None
        for p in (settings.jpki_trust_anchors, settings.jpki_crl)
    )
    return _load_trust(stamp)


@functools.lru_cache(maxsize=4)
def _load_trust(stamp: tuple[tuple[str, int] | None, ...]) -> TrustConfig:
    anchors_at, crl_at = stamp
    anchors = Path(anchors_at[0]).read_bytes() if anchors_at else b""
    crl = Path(crl_at[0]).read_bytes() if crl_at else None
    if not anchors:
        return TrustConfig(())
    return TrustConfig.from_pem(anchors, crl)
