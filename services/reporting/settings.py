"""Reporting's own settings (beyond the runtime's ServiceSettings): operators' credentials and
the demo traffic driver."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.subjects import DEFAULT_NAMESPACE
from services.runtime.settings import Identifier, NatsUrl, read_settings


class ReportingSettings(BaseSettings):
    """The service's own settings. The KPIs and open data are public; operations are not."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    answer_cache_mb: int = Field(
        default=32,
        ge=0,
        le=1024,
        validation_alias=AliasChoices("REPORTING_ANSWER_CACHE_MB"),
        description="Memory for encoded KPI answers kept until the read-models change "
        "(services/reporting/answers.py); 0: every request is computed.",
    )


def load_reporting_settings() -> ReportingSettings:
    """REPORTING_*; a bad value stops start-up, one line per variable."""
    return read_settings(ReportingSettings, "reporting")


class DemoSettings(BaseSettings):
    """Where `cityhall demo` sends its traffic; the defaults fit `cityhall up`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: NatsUrl = Field(
        default="nats://127.0.0.1:4223", validation_alias=AliasChoices("NATS_URL")
    )
    namespace: Identifier = Field(
        default=DEFAULT_NAMESPACE, validation_alias=AliasChoices("CITYHALL_NAMESPACE")
    )
    home: Path = Field(default=Path(".cityhall"), validation_alias=AliasChoices("CITYHALL_HOME"))
    applications_url: str = Field(
        default="http://127.0.0.1:8001",
        pattern=r"^https?://",
        validation_alias=AliasChoices("CITYHALL_APPLICATIONS_URL"),
        description="Base URL of the applications service.",
    )
