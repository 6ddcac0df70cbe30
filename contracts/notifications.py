"""Events and commands of the notifications service (通知).

Contact details never travel here: an event names the notification, the rule and the event
that caused it, the channel and the kind of recipient, never an e-mail address or a phone number.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.envelope import TYPE_PREFIX, Event


class NotificationChannel(StrEnum):
    """How a notification (通知) is delivered: e-mail, or a signed webhook to a city system."""

    EMAIL = "email"
    WEBHOOK = "webhook"


class RecipientKind(StrEnum):
    """Who is told: the applicant (申請者) or a staff group (職員: finance office, operators)."""

    APPLICANT = "applicant"
    STAFF = "staff"


RULE_PATTERN = r"^[a-z][a-z0-9-]{1,63}$"


class NotificationSentV1(Event):
    """A notification was handed to its provider (SMTP server or webhook receiver): 通知送信済み.

    ``provider_message_id`` is what the provider calls the message (the e-mail's Message-ID, or
    the id the webhook receiver answered with), to find it in the provider's logs.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.notifications.NotificationSent.v1"
    subject: ClassVar[str] = "notifications.notification.sent.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="NotificationSent.v1",
        json_schema_extra={
            "examples": [
                {
                    "notification_id": "3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b",
                    "rule": "application-acknowledgement",
                    "cause_event_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                    "channel": "email",
                    "recipient_kind": "applicant",
                    "provider_message_id": "<3f1d2c4b5a6e4f708a9b0c1d2e3f4a5b@cityhall.koriyama>",
                    "attempts": 1,
                    "sent_at": "2026-11-24T09:00:02+09:00",
                }
            ]
        },
    )

    notification_id: uuid.UUID
    rule: str = Field(pattern=RULE_PATTERN, description="The rule that asked for it.")
    cause_event_id: str = Field(
        min_length=1, max_length=200, description="ce-id of the event that caused it."
    )
    channel: NotificationChannel
    recipient_kind: RecipientKind
    provider_message_id: str = Field(min_length=1, max_length=500)
    attempts: int = Field(ge=1, description="Delivery attempts it took.")
    sent_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.notification_id)


class NotificationFailedV1(Event):
    """A notification could not be delivered and will not be tried again (通知失敗).

    Either the provider refused it for good (SMTP 5xx, webhook 4xx) or every retry of a
    temporary failure was used up. It shows in the operators' list of failed notifications.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.notifications.NotificationFailed.v1"
    subject: ClassVar[str] = "notifications.notification.failed.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="NotificationFailed.v1",
        json_schema_extra={
            "examples": [
                {
                    "notification_id": "3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b",
                    "rule": "application-acknowledgement",
                    "cause_event_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                    "channel": "email",
                    "recipient_kind": "applicant",
                    "reason": "permanent: SMTP 550 mailbox unavailable",
                    "permanent": True,
                    "attempts": 1,
                    "failed_at": "2026-11-24T09:00:02+09:00",
                }
            ]
        },
    )

    notification_id: uuid.UUID
    rule: str = Field(pattern=RULE_PATTERN)
    cause_event_id: str = Field(min_length=1, max_length=200)
    channel: NotificationChannel
    recipient_kind: RecipientKind
    reason: str = Field(min_length=1, max_length=1000)
    permanent: bool = Field(description="Refused for good, rather than out of retries.")
    attempts: int = Field(ge=1)
    failed_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.notification_id)


class NotificationResendRequestedV1(Event):
    """An operator asked to send a dead notification again (再送依頼), once its cause was fixed.

    The notification goes back to the sender with a fresh set of retries and ends, as before,
    as NotificationSent or NotificationFailed; ``address_changed`` says whether it goes to
    another address than last time (the contact was corrected), never the address itself.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.notifications.NotificationResendRequested.v1"
    subject: ClassVar[str] = "notifications.notification.resend_requested.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="NotificationResendRequested.v1",
        json_schema_extra={
            "examples": [
                {
                    "notification_id": "3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b",
                    "rule": "application-acknowledgement",
                    "cause_event_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                    "channel": "email",
                    "recipient_kind": "applicant",
                    "requested_by": "ops01",
                    "address_changed": True,
                    "previous_attempts": 1,
                    "requested_at": "2026-11-24T10:15:00+09:00",
                }
            ]
        },
    )

    notification_id: uuid.UUID
    rule: str = Field(pattern=RULE_PATTERN)
    cause_event_id: str = Field(min_length=1, max_length=200)
    channel: NotificationChannel
    recipient_kind: RecipientKind
    requested_by: str = Field(
        min_length=1, max_length=200, description="The staff id of the operator who asked."
    )
    address_changed: bool = Field(description="Sent to another address than the failed one.")
    previous_attempts: int = Field(ge=0, description="Attempts of the delivery that failed.")
    requested_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.notification_id)


EVENTS: tuple[type[Event], ...] = (
    NotificationSentV1,
    NotificationFailedV1,
    NotificationResendRequestedV1,
)
COMMANDS: tuple[type[BaseModel], ...] = ()
