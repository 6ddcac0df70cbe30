"""What the operators' routes answer about deliveries and resends: addresses masked
(``t****@example.jp``, a webhook's host only), times timezone-aware (UTC, as every time this
API gives; the CLI shows them in Asia/Tokyo)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from contracts.notifications import NotificationChannel, RecipientKind
from services.notifications.deliveries import Delivery, Resend
from services.notifications.domain import (
    NotificationKind,
    NotificationStatus,
    Rule,
    applicant_in_key,
    mask_address,
)


class DeliveryView(BaseModel):
    """A failed or pending delivery. ``attempts`` and the attempt times are those of its
    latest delivery (since the last resend); ``resends`` counts the resends."""

    id: uuid.UUID
    rule: str
    kind: NotificationKind | None = Field(description="None once its rule is out of force.")
    channel: NotificationChannel
    recipient_kind: RecipientKind
    recipient: str = Field(description="The address, masked.")
    applicant_id: uuid.UUID | None = Field(
        description="Whose contact to correct (PUT /contacts/{applicant_id}); None for staff."
    )
    status: NotificationStatus
    reason: str | None = Field(description="Why the last attempt failed.")
    attempts: int
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="None once it is sent or dead.")
    failed_at: datetime | None = Field(description="When it was given up (dead).")
    cause_event_id: str = Field(description="ce-id of the event that caused it.")
    cause_event: str | None = Field(description="That event's title, from the rule.")
    resends: int

    @classmethod
    def of(cls, d: Delivery, rule: Rule | None) -> DeliveryView:
        waiting = d.status in (NotificationStatus.PENDING, NotificationStatus.FAILED)
        return cls(
            id=d.id,
            rule=d.rule,
            kind=None if rule is None else rule.kind,
            channel=d.channel,
            recipient_kind=d.recipient_kind,
            recipient=mask_address(d.address),
            applicant_id=applicant_in_key(d.recipient_key),
            status=d.status,
            reason=d.last_error,
            attempts=d.attempts,
            first_attempt_at=d.first_attempt_at,
            last_attempt_at=d.last_attempt_at,
            next_attempt_at=d.next_attempt_at if waiting else None,
            failed_at=d.finished_at if d.status is NotificationStatus.DEAD else None,
            cause_event_id=d.cause_event_id,
            cause_event=None if rule is None else rule.event,
            resends=d.resends,
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryView]
    total: int = Field(description="How many the filters select, all pages.")
    limit: int
    offset: int


class ResendView(BaseModel):
    """One resend: who asked, when, and where it went (the contact's address at the time)."""

    requested_by: str = Field(description="The staff id of the operator.")
    requested_at: datetime
    address: str = Field(description="Where this resend went, masked.")
    address_changed: bool = Field(description="Another address than the failed delivery's.")
    previous_error: str | None
    previous_attempts: int

    @classmethod
    def of(cls, r: Resend) -> ResendView:
        return cls(
            requested_by=r.requested_by,
            requested_at=r.requested_at,
            address=mask_address(r.address),
            address_changed=r.address != r.previous_address,
            previous_error=r.previous_error,
            previous_attempts=r.previous_attempts,
        )


class ResendAnswer(BaseModel):
    notification: DeliveryView
    resend: ResendView
