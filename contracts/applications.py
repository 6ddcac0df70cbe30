"""Events published by the applications service (申請)."""

from __future__ import annotations

import uuid
from datetime import date
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

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


class SignedApplication(BaseModel):
    """A My Number card signature (署名用電子証明書, JPKI) over this applicant's application.

    ``challenge`` is the value ``POST /identity/challenges`` gave the signed-in applicant (single
    use, a few minutes' life). ``signature`` is the base64 SHA256withRSA (PKCS#1 v1.5) signature
    of the canonical JSON ``{"applicant":…,"challenge":…,"channel":…,"form":…,
    "procedure_code":…,"purpose":"koriyama-cityhall/submit-application/v1"}`` (sorted keys, no
    spaces, UTF-8; ``applicant`` is the account id, the token's ``sub``).
    ``certificate_chain`` is the signer's certificate first, then its CA certificates, in PEM.
    """

    model_config = ConfigDict(
        extra="forbid",
        title="SignedApplication",
        json_schema_extra={
            "examples": [
                {
                    "challenge": "q3Vb0kX2mJ8sT1yR6wE4uI7oP9aS5dF3gH2jK8lZ0xC",
                    "signature": "MEUCIQ…base64…",
                    "certificate_chain": ["-----BEGIN CERTIFICATE-----\n…"],
                }
            ]
        },
    )

    challenge: str = Field(
        pattern=r"^[A-Za-z0-9_-]{43}$",
        description="The single-use challenge issued to this applicant (POST /identity/challenges)",
    )
    signature: str = Field(min_length=1, max_length=2048)
    certificate_chain: list[str] = Field(min_length=1, max_length=5)


class SubmitApplication(BaseModel):
    """Command: submit an application (POST /applications).

    Citizens submit online; counter staff and the mail room enter counter and mail applications.
    """

    model_config = ConfigDict(
        extra="forbid",
        title="SubmitApplication",
        json_schema_extra={
            "examples": [
                {"procedure_code": "JUMINHYO", "channel": "online"},
                {
                    "procedure_code": "JUMINHYO",
                    "channel": "counter",
                    "form": {"copies": 1, "purpose": "勤務先への提出"},
                },
            ]
        },
    )

    procedure_code: str = Field(
        pattern=PROCEDURE_CODE_PATTERN,
        description="Code of the procedure (手続き) in the city's catalog.",
    )
    channel: Channel = Channel.ONLINE
    form: dict[str, Any] = Field(
        default_factory=dict,
        description="The form's answers, checked against the procedure's own JSON Schema.",
    )
    identity: SignedApplication | None = Field(
        default=None,
        description=(
            "Required online for a group-2 procedure (本人確認必要型), from the signed-in "
            "applicant: a signature binding the account, a challenge and this application."
        ),
    )


class ApplicationStepV1(Event):
    """Base of the events that move one application a step through its state machine."""

    application_id: uuid.UUID
    procedure_code: str = Field(pattern=PROCEDURE_CODE_PATTERN)
    occurred_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.application_id)


def _step_example(**extra: JsonValue) -> dict[str, JsonValue]:
    return {
        "application_id": "0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10",
        "procedure_code": "JUMINHYO",
        "occurred_at": "2026-11-24T10:00:00+09:00",
        **extra,
    }


class ApplicationPaidV1(ApplicationStepV1):
    """The application's fee (手数料) was captured by payments: the application is paid."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationPaid.v1"
    subject: ClassVar[str] = "applications.application.paid.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationPaid.v1",
        json_schema_extra={
            "examples": [
                _step_example(payment_id="7c9e6679-7425-40de-944b-e07fc1f90ae7", amount_yen=300)
            ]
        },
    )

    payment_id: uuid.UUID
    amount_yen: int = Field(gt=0)


class ApplicationInReviewV1(ApplicationStepV1):
    """Staff took the application up for review (審査中): the applicant can no longer withdraw."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationInReview.v1"
    subject: ClassVar[str] = "applications.application.in_review.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationInReview.v1",
        json_schema_extra={"examples": [_step_example()]},
    )


class ApplicationApprovedV1(ApplicationStepV1):
    """The application was approved (承認) by staff."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationApproved.v1"
    subject: ClassVar[str] = "applications.application.approved.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationApproved.v1",
        json_schema_extra={"examples": [_step_example()]},
    )


class ApplicationRejectedV1(ApplicationStepV1):
    """The application was rejected (却下) by staff, with the reason given to the applicant."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationRejected.v1"
    subject: ClassVar[str] = "applications.application.rejected.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationRejected.v1",
        json_schema_extra={"examples": [_step_example(reason="添付書類が不足しています")]},
    )

    reason: str = Field(min_length=1, max_length=500)


class ApplicationWithdrawnV1(ApplicationStepV1):
    """The applicant withdrew the application (取下げ) before review."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ApplicationWithdrawn.v1"
    subject: ClassVar[str] = "applications.application.withdrawn.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ApplicationWithdrawn.v1",
        json_schema_extra={"examples": [_step_example()]},
    )


class CertificateIssuedV1(ApplicationStepV1):
    """A certificate (証明書) was issued for an approved application.

    Carries the certificate number only: the verification code is the applicant's secret.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.CertificateIssued.v1"
    subject: ClassVar[str] = "applications.certificate.issued.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="CertificateIssued.v1",
        json_schema_extra={"examples": [_step_example(certificate_number="072036-2026-0000001")]},
    )

    certificate_number: str = Field(min_length=1, max_length=40)


class ProcedureGroup(IntEnum):
    """1: 本人確認不要型 (no identity check by law); 2: 本人確認必要型 (identity required)."""

    NO_IDENTITY_CHECK = 1
    IDENTITY_REQUIRED = 2


class ProcedureFactsV1(Event):
    """What the catalog says about one procedure (手続き): the fields reporting needs."""

    procedure_code: str = Field(pattern=PROCEDURE_CODE_PATTERN)
    name_ja: str = Field(min_length=1, max_length=200)
    department: str = Field(min_length=1, max_length=100, description="部局")
    group: ProcedureGroup
    fee_yen: int = Field(ge=0)
    yields_certificate: bool
    online_since: date | None = Field(description="None while the procedure is offline.")
    planned_online_quarter: str | None = Field(
        default=None, pattern=r"^\d{4}-Q[1-4]$", description="Fiscal quarter, e.g. 2027-Q1."
    )
    sample: bool = Field(default=False, description="Generated sample data, not a real procedure.")
    occurred_at: AwareDatetime

    def aggregate_id(self) -> str:
        return self.procedure_code


_PROCEDURE_EXAMPLE: dict[str, JsonValue] = {
    "procedure_code": "JUMINHYO",
    "name_ja": "住民票の写しの交付",
    "department": "市民部",
    "group": 2,
    "fee_yen": 300,
    "yields_certificate": True,
    "online_since": "2021-04-01",
    "planned_online_quarter": None,
    "sample": False,
    "occurred_at": "2026-11-24T10:00:00+09:00",
}


class ProcedureRegisteredV1(ProcedureFactsV1):
    """A procedure was added to the catalog (手続き登録)."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ProcedureRegistered.v1"
    subject: ClassVar[str] = "applications.procedure.registered.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ProcedureRegistered.v1",
        json_schema_extra={"examples": [_PROCEDURE_EXAMPLE]},
    )


class ProcedureUpdatedV1(ProcedureFactsV1):
    """A procedure's catalog entry changed (fee, form, department, roadmap quarter...)."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ProcedureUpdated.v1"
    subject: ClassVar[str] = "applications.procedure.updated.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ProcedureUpdated.v1",
        json_schema_extra={"examples": [_PROCEDURE_EXAMPLE]},
    )


class ProcedureOnlinedV1(ProcedureFactsV1):
    """A procedure went online (オンライン化): online coverage grows by one."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.applications.ProcedureOnlined.v1"
    subject: ClassVar[str] = "applications.procedure.onlined.v1"
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ProcedureOnlined.v1",
        json_schema_extra={"examples": [_PROCEDURE_EXAMPLE]},
    )


EVENTS: tuple[type[Event], ...] = (
    ApplicationSubmittedV1,
    ApplicationPaymentRequestedV1,
    ApplicationPaidV1,
    ApplicationInReviewV1,
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureRegisteredV1,
    ProcedureUpdatedV1,
    ProcedureOnlinedV1,
)
COMMANDS: tuple[type[BaseModel], ...] = (SubmitApplication,)
