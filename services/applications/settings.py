"""Settings of the applications service alone (the runtime's settings are shared)."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.applications.signatures import TrustConfig
from services.runtime.settings import read_settings


class ApplicationsSettings(BaseSettings):
    """Environment names are given with each field."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    idempotency_retention_hours: float = Field(
        default=48.0,
        ge=24.0,
        validation_alias=AliasChoices("APPLICATIONS_IDEMPOTENCY_RETENTION_HOURS"),
        description="How long an Idempotency-Key and its response are kept (at least 24 h).",
    )

    identity_challenge_lifetime_s: float = Field(
        default=300.0,
        gt=0.0,
        le=900.0,
        validation_alias=AliasChoices("APPLICATIONS_IDENTITY_CHALLENGE_LIFETIME_S"),
        description=(
            "How long a group-2 signing challenge (POST /identity/challenges) may be used, in "
            "seconds (at most 15 minutes): long enough to read the card, short enough that a "
            "captured signature is soon worthless."
        ),
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
        description=(
            "CRL file (PEM: one or more; or one DER) of the root and intermediate CAs: every "
            "certificate of a path but the anchor needs a current CRL of its issuer. Re-read "
            "when the file changes."
        ),
    )


def load_applications_settings() -> ApplicationsSettings:
    """APPLICATIONS_* and the identity settings; a bad value stops start-up, one line per
    variable."""
    return read_settings(ApplicationsSettings, "applications")


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
