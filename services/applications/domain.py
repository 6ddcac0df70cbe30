"""Applications' rules: the state machine of an application (申請), pure functions, no I/O.

```
submitted ──(fee > 0, asked)──► awaiting_payment ──► paid ──┐
    │                          │                 │   ▼
    └──────────────(no fee)────┼─────────────────┴► in_review ──► approved ──► certificate_issued
    │                          │                 │              └► rejected     (certificates only)
    └──────────────────────────┴─────────────────┴► withdrawn (by the applicant, before review)
```

Every step returns the new application and the event that announces it; a step the state
machine does not allow raises ``IllegalTransition`` (HTTP 409).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationInReviewV1,
    ApplicationPaidV1,
    ApplicationPaymentRequestedV1,
    ApplicationRejectedV1,
    ApplicationSubmittedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    Channel,
    ProcedureGroup,
)
from contracts.envelope import Event
from services.applications.identity import IdentityRefusal, IdentityRefused, VerifiedIdentity

CERTIFICATE_FEE_FACILITY = "shiminka"
"""市民課: the facility whose revenue certificate fees are."""


class ApplicationStatus(StrEnum):
    SUBMITTED = "submitted"
    """受付: received, waiting for review (or for its fee to be asked)."""
    AWAITING_PAYMENT = "awaiting_payment"
    """手数料の支払待ち: the fee was asked of payments."""
    PAID = "paid"
    """支払済み: payments captured the fee."""
    IN_REVIEW = "in_review"
    """審査中."""
    APPROVED = "approved"
    """承認."""
    REJECTED = "rejected"
    """却下."""
    WITHDRAWN = "withdrawn"
    """取下げ."""
    CERTIFICATE_ISSUED = "certificate_issued"
    """証明書交付済み."""


S = ApplicationStatus
ALLOWED: dict[ApplicationStatus, frozenset[ApplicationStatus]] = {
    S.SUBMITTED: frozenset({S.AWAITING_PAYMENT, S.IN_REVIEW, S.WITHDRAWN}),
    S.AWAITING_PAYMENT: frozenset({S.PAID, S.WITHDRAWN}),
    S.PAID: frozenset({S.IN_REVIEW, S.WITHDRAWN}),
    S.IN_REVIEW: frozenset({S.APPROVED, S.REJECTED}),
    S.APPROVED: frozenset({S.CERTIFICATE_ISSUED}),
    S.REJECTED: frozenset(),
    S.WITHDRAWN: frozenset(),
    S.CERTIFICATE_ISSUED: frozenset(),
}


class ApplicationError(Exception):
    """A rule of the applications service refused a request."""


class IllegalTransition(ApplicationError):
    """The application's state does not allow this step (HTTP 409)."""

    def __init__(self, application_id: uuid.UUID, current: ApplicationStatus, wanted: str) -> None:
        super().__init__(f"application {application_id} is {current.value}: cannot {wanted}")
        self.application_id = application_id
        self.current = current
        self.wanted = wanted


class FeeUnpaid(ApplicationError):
    """A fee-bearing application cannot be approved before its fee is captured (HTTP 409)."""


class NoFeeDue(ApplicationError):
    """The procedure has no fee to ask for (HTTP 409)."""


class NotACertificateProcedure(ApplicationError):
    """Only a procedure that yields a certificate issues one (HTTP 409)."""


@dataclass(frozen=True)
class Procedure:
    """A procedure (手続き) of the city's catalog."""

    code: str
    name_ja: str
    department: str
    group: ProcedureGroup
    fee_yen: int
    yields_certificate: bool
    form_schema: dict[str, Any]
    online_since: date | None = None
    planned_online_quarter: str | None = None
    sample: bool = False
    fee_facility: str = CERTIFICATE_FEE_FACILITY

    @property
    def online(self) -> bool:
        return self.online_since is not None


@dataclass(frozen=True)
class Application:
    """An application (申請) for one procedure, through one channel."""

    id: uuid.UUID
    procedure_code: str
    channel: Channel
    status: ApplicationStatus
    submitted_at: datetime
    applicant_id: uuid.UUID | None = None
    form: dict[str, Any] = field(default_factory=dict)
    fee_yen: int = 0
    payment_id: uuid.UUID | None = None
    paid_at: datetime | None = None
    decided_at: datetime | None = None
    rejection_reason: str | None = None
    certificate_number: str | None = None
    identity: VerifiedIdentity | None = None
    """The verified My Number card signer (group 2), never the My Number itself."""


Decision = tuple[Application, list[Event]]


def _aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware")


def _must_be_paid(app: Application) -> None:
    if app.fee_yen > 0 and app.paid_at is None:
        raise FeeUnpaid(f"application {app.id}: its fee of {app.fee_yen} yen is not paid")


def _step(app: Application, to: ApplicationStatus, wanted: str) -> None:
    if to not in ALLOWED[app.status]:
        raise IllegalTransition(app.id, app.status, wanted)


def needs_signature(procedure: Procedure, channel: Channel) -> bool:
    """Online, a group-2 procedure needs the My Number card's signature; at the counter or by
    mail, staff check identity in person or on the enclosed copy."""
    return procedure.group is ProcedureGroup.IDENTITY_REQUIRED and channel is Channel.ONLINE


def refuse_unsigned(procedure: Procedure) -> IdentityRefused:
    return IdentityRefused(
        IdentityRefusal.SIGNATURE_REQUIRED,
        f"procedure {procedure.code} requires identity verification (本人確認): sign in, get "
        "a challenge (POST /identity/challenges) and sign it with the application using the "
        "My Number card's signature certificate",
    )


def submit(
    procedure: Procedure | str,
    channel: Channel,
    now: datetime,
    application_id: uuid.UUID | None = None,
    *,
    applicant_id: uuid.UUID | None = None,
    form: dict[str, Any] | None = None,
    identity: VerifiedIdentity | None = None,
) -> tuple[Application, ApplicationSubmittedV1]:
    """A new application and the event that announces it (its fee: see ``request_fee``)."""
    _aware(now)
    code = procedure if isinstance(procedure, str) else procedure.code
    app = Application(
        id=application_id or uuid.uuid4(),
        procedure_code=code,
        channel=channel,
        status=ApplicationStatus.SUBMITTED,
        submitted_at=now,
        applicant_id=applicant_id,
        form=dict(form or {}),
        fee_yen=0 if isinstance(procedure, str) else procedure.fee_yen,
        identity=identity,
    )
    event = ApplicationSubmittedV1(
        application_id=app.id,
        procedure_code=app.procedure_code,
        channel=app.channel,
        submitted_at=app.submitted_at,
        applicant_id=applicant_id,
    )
    return app, event


def fee_due_at_submission(app: Application) -> bool:
    """An online application with a fee asks for it as it is submitted; at the counter or by
    mail, staff ask for it (``request_fee``) when the applicant is ready to pay."""
    return app.channel is Channel.ONLINE and app.fee_yen > 0


def request_fee(app: Application, procedure: Procedure, now: datetime) -> Decision:
    """submitted -> awaiting_payment: ask payments to collect the procedure's fee."""
    _aware(now)
    if app.fee_yen <= 0:
        raise NoFeeDue(f"application {app.id}: procedure {app.procedure_code} has no fee")
    _step(app, S.AWAITING_PAYMENT, "ask for its fee")
    return replace(app, status=S.AWAITING_PAYMENT), [
        ApplicationPaymentRequestedV1(
            application_id=app.id,
            procedure_code=app.procedure_code,
            amount_yen=app.fee_yen,
            fee_item=procedure.name_ja[:100],
            facility_code=procedure.fee_facility,
            requested_at=now,
            applicant_id=app.applicant_id,
        )
    ]


def record_payment(
    app: Application, payment_id: uuid.UUID, amount_yen: int, now: datetime
) -> Decision:
    """Payments captured the fee: awaiting_payment -> paid."""
    _aware(now)
    _step(app, S.PAID, "record a payment")
    paid = replace(app, status=S.PAID, payment_id=payment_id, paid_at=now)
    return paid, [
        ApplicationPaidV1(
            application_id=app.id,
            procedure_code=app.procedure_code,
            occurred_at=now,
            payment_id=payment_id,
            amount_yen=amount_yen,
        )
    ]


def start_review(app: Application, now: datetime) -> Decision:
    """Staff take the application up (submitted or paid -> in_review); never one unpaid."""
    _aware(now)
    _step(app, S.IN_REVIEW, "start review")
    _must_be_paid(app)
    return replace(app, status=S.IN_REVIEW), [
        ApplicationInReviewV1(
            application_id=app.id, procedure_code=app.procedure_code, occurred_at=now
        )
    ]


def approve(app: Application, now: datetime) -> Decision:
    """in_review -> approved; never an application whose fee is not captured."""
    _aware(now)
    _step(app, S.APPROVED, "approve")
    _must_be_paid(app)
    return replace(app, status=S.APPROVED, decided_at=now), [
        ApplicationApprovedV1(
            application_id=app.id, procedure_code=app.procedure_code, occurred_at=now
        )
    ]


def reject(app: Application, reason: str, now: datetime) -> Decision:
    """in_review -> rejected, with the reason the applicant is told."""
    _aware(now)
    reason = reason.strip()
    if not reason:
        raise ValueError("a rejection needs a reason")
    _step(app, S.REJECTED, "reject")
    return replace(app, status=S.REJECTED, decided_at=now, rejection_reason=reason), [
        ApplicationRejectedV1(
            application_id=app.id,
            procedure_code=app.procedure_code,
            occurred_at=now,
            reason=reason,
        )
    ]


def withdraw(app: Application, now: datetime) -> Decision:
    """The applicant withdraws, before review starts."""
    _aware(now)
    _step(app, S.WITHDRAWN, "withdraw")
    return replace(app, status=S.WITHDRAWN), [
        ApplicationWithdrawnV1(
            application_id=app.id, procedure_code=app.procedure_code, occurred_at=now
        )
    ]


def issue_certificate(
    app: Application, procedure: Procedure, certificate_number: str, now: datetime
) -> Decision:
    """approved -> certificate_issued, for a procedure that yields a certificate."""
    _aware(now)
    if not procedure.yields_certificate:
        raise NotACertificateProcedure(f"procedure {procedure.code} issues no certificate")
    _step(app, S.CERTIFICATE_ISSUED, "issue a certificate")
    issued = replace(app, status=S.CERTIFICATE_ISSUED, certificate_number=certificate_number)
    return issued, [
        CertificateIssuedV1(
            application_id=app.id,
            procedure_code=app.procedure_code,
            occurred_at=now,
            certificate_number=certificate_number,
        )
    ]
