"""Reporting's own settings (beyond the runtime's ServiceSettings): the demo traffic driver."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.subjects import DEFAULT_NAMESPACE
from services.runtime.settings import Identifier, NatsUrl


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
