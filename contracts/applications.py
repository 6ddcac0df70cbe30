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
                    "applicant_id": "5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f",
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
    applicant_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "Pseudonymous id of the citizen's account, when there is one (online). Contact "
            "details never travel on the bus: notifications looks them up by this id."
        ),
    )

    def aggregate_id(self) -> str:
        return str(self.application_id)


class ApplicationPaymentRequestedV1(Event):
    """An application's fee (手数料) is due: payments creates a payment request to collect it.

    The fee is revenue of ``facility_code`` (市民課 ``shiminka`` for certificate fees).
    Payments answers with PaymentCaptured carrying the same ``application_id``.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationPaymentRequested.v1"
    subject: ClassVar[str] = "applications.application.payment_requested.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationPaymentRequested.v1",
        json_schema_extra={
            "examples": [
                {
                    "application_id": "0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10",
                    "procedure_code": "JUMINHYO",
                    "amount_yen": 300,
                    "fee_item": "住民票の写し",
                    "facility_code": "shiminka",
                    "requested_at": "2026-11-24T09:00:05+09:00",
                    "applicant_id": "5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f",
                }
            ]
        },
    )

    application_id: uuid.UUID
    procedure_code: str = Field(pattern=PROCEDURE_CODE_PATTERN)
    amount_yen: int = Field(gt=0, description="The fee, in integer yen.")
    fee_item: str = Field(min_length=1, max_length=100, description="What the fee is for.")
    facility_code: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{1,39}$", description="The facility whose revenue it is."
    )
    requested_at: AwareDatetime
    applicant_id: uuid.UUID | None = None

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


EVENTS: tuple[type[Event], ...] = (ApplicationSubmittedV1, ApplicationPaymentRequestedV1)
COMMANDS: tuple[type[BaseModel], ...] = (SubmitApplication,)
