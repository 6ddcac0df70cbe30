"""Events published by the applications service (申請)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.envelope import TYPE_PREFIX, Event


class Channel(StrEnum):
    """How an application reached the city: online, at the counter (窓口) or by mail (郵送)."""

    ONLINE = "online"
    COUNTER = "counter"
    MAIL = "mail"


PROCEDURE_CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_-]{1,31}$"


class ApplicationSubmittedV1(Event):
    """An application for a procedure was submitted (申請の受付), through any channel.

    Counter and mail applications are recorded too, so the share that came online can be
    measured (online usage rate).
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationSubmitted.v1"
    subject: ClassVar[str] = "applications.application.submitted.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationSubmitted.v1",
        json_schema_extra={
            "examples": [
                {
                    "application_id": "0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10",
                    "procedure_code": "JUMINHYO",
                    "channel": "online",
                    "submitted_at": "2026-11-24T09:00:00+09:00",
                }
            ]
        },
    )

    application_id: uuid.UUID
    procedure_code: str = Field(
        pattern=PROCEDURE_CODE_PATTERN,
        description="Code of the procedure (手続き) in the city's catalog.",
    )
    channel: Channel
    submitted_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.application_id)


class SubmitApplication(BaseModel):
    """Command: submit an application (POST /applications).

    Citizens submit online; counter staff and the mail room enter counter and mail applications.
    """

    model_config = ConfigDict(
        extra="forbid",
        title="SubmitApplication",
        json_schema_extra={"examples": [{"procedure_code": "JUMINHYO", "channel": "online"}]},
    )

    procedure_code: str = Field(
        pattern=PROCEDURE_CODE_PATTERN,
        description="Code of the procedure (手続き) in the city's catalog.",
    )
    channel: Channel = Channel.ONLINE


EVENTS: tuple[type[Event], ...] = (ApplicationSubmittedV1,)
COMMANDS: tuple[type[BaseModel], ...] = (SubmitApplication,)
