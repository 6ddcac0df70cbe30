"""Notifications' rules: which event tells whom, how deliveries end, how retries wait.

Pure values and functions, no I/O. Rules are data (``rules.yaml``); this module reads them
into ``Rule`` values and decides, for one event, which notifications it asks for.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from contracts import EVENT_TYPES
from contracts.envelope import Event
from contracts.notifications import RULE_PATTERN, NotificationChannel, RecipientKind


class NotificationKind(StrEnum):
    """What a notification is about; a citizen may opt out of a kind (配信停止)."""

    APPLICATION_STATUS = "application_status"
    PAYMENT = "payment"
    CERTIFICATE = "certificate"
    STAFF_ALERT = "staff_alert"


class Language(StrEnum):
    """Japanese by default; English as the recipient's choice."""

    JA = "ja"
    EN = "en"


class NotificationStatus(StrEnum):
    """pending -> sent | failed -> (retried) -> sent | dead."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"


# No control characters (NUL, which PostgreSQL cannot store, and the like): never in an address.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
PHONE_PATTERN = r"^\+?[0-9]{10,15}$"


class Contact(BaseModel):
    """How to reach an applicant (連絡先), by the pseudonymous ``applicant_id`` events carry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)
    language: Language = Language.JA
    opt_outs: frozenset[NotificationKind] = frozenset()


# -- rules ------------------------------------------------------------------------------------

STAFF_PREFIX = "staff:"
DEAD_LETTERS_GROWING = "DeadLettersGrowing"
"""The internal trigger of the DLQ watch (not a bus event)."""


class DeadLettersGrowing(BaseModel):
    """The DLQ watch's finding: dead letters have piled up past the threshold (運用者への通知)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "dlq_stream": "CITYHALL_DLQ",
                    "dead_letters": 12,
                    "new_dead_letters": 12,
                    "threshold": 10,
                    "observed_at": "2026-11-24T10:00:00+09:00",
                }
            ]
        },
    )

    dlq_stream: str
    dead_letters: int
    new_dead_letters: int
    threshold: int
    observed_at: AwareDatetime


Condition = Literal["present", "absent"]


class Rule(BaseModel):
    """One line of ``rules.yaml``: on this event (when these fields are set), tell them."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str = Field(pattern=RULE_PATTERN)
    event: str = Field(description="Event title, e.g. ApplicationSubmitted.v1.")
    to: str = Field(description="'applicant' or 'staff:<group>'.")
    kind: NotificationKind
    template: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    when: dict[str, Condition] = Field(default_factory=dict)

    @field_validator("to")
    @classmethod
    def _recipient(cls, value: str) -> str:
        if value != RecipientKind.APPLICANT.value and not re.match(
            r"^staff:[a-z][a-z0-9_]{0,40}$", value
        ):
            raise ValueError("use 'applicant' or 'staff:<group>'")
        return value

    @property
    def staff_group(self) -> str | None:
        return self.to.removeprefix(STAFF_PREFIX) if self.to.startswith(STAFF_PREFIX) else None

    def applies_to(self, fields: Mapping[str, Any]) -> bool:
        for name, condition in self.when.items():
            present = fields.get(name) is not None
            if present != (condition == "present"):
                return False
        return True


class RuleBook(BaseModel):
    """Every rule, as shipped in ``rules.yaml`` (or the file ``NOTIFY_RULES_FILE`` names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[Rule, ...]

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        ids = [r.id for r in rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids used twice: {', '.join(dupes)}")
        return rules

    def for_event(self, title: str) -> list[Rule]:
        return [r for r in self.rules if r.event == title]

    def dormant(self) -> list[Rule]:
        """Rules on events that contracts do not define (yet): they wait, they do not fail."""
        known = set(event_models()) | {DEAD_LETTERS_GROWING}
        return [r for r in self.rules if r.event not in known]


def event_title(model: type[BaseModel]) -> str:
    """``ApplicationSubmitted.v1``: the name rules and templates use for an event."""
    title = model.model_config.get("title")
    return title if isinstance(title, str) else model.__name__


def event_models() -> dict[str, type[BaseModel]]:
    """Every model a rule or template can be about, by title."""
    models: dict[str, type[BaseModel]] = {event_title(m): m for m in EVENT_TYPES.values()}
    models[DEAD_LETTERS_GROWING] = DeadLettersGrowing
    return models


def title_of(event: Event | BaseModel) -> str:
    return (
        DEAD_LETTERS_GROWING if isinstance(event, DeadLettersGrowing) else event_title(type(event))
    )


# -- recipients and planned notifications ---------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a message goes: an e-mail address or a webhook URL."""

    channel: NotificationChannel
    address: str

    @classmethod
    def parse(cls, uri: str) -> Target:
        if uri.startswith("mailto:"):
            address = uri.removeprefix("mailto:")
            if not re.match(EMAIL_PATTERN, address):
                raise ValueError(f"not an e-mail address: {address!r}")
            return cls(NotificationChannel.EMAIL, address)
        if uri.startswith(("https://", "http://")):
            return cls(NotificationChannel.WEBHOOK, uri)
        raise ValueError(f"a staff target is mailto:<address> or an http(s) URL, got {uri!r}")


@dataclass(frozen=True)
class Recipient:
    kind: RecipientKind
    key: str
    """Stable identity for the uniqueness (event, rule, recipient): never the address alone."""
    target: Target
    language: Language


def applicant_recipient(
    applicant_id: uuid.UUID, contact: Contact | None, kind: NotificationKind
) -> Recipient | None:
    """The applicant by e-mail, unless there is no contact or they opted out of ``kind``."""
    if contact is None or kind in contact.opt_outs:
        return None
    return Recipient(
        RecipientKind.APPLICANT,
        f"applicant:{applicant_id}",
        Target(NotificationChannel.EMAIL, contact.email),
        contact.language,
    )


def staff_recipients(group: str, staff: Mapping[str, Sequence[str]]) -> list[Recipient]:
    return [
        Recipient(RecipientKind.STAFF, f"staff:{group}:{uri}", Target.parse(uri), Language.JA)
        for uri in staff.get(group, ())
    ]


def applicant_of(fields: Mapping[str, Any]) -> uuid.UUID | None:
    value = fields.get("applicant_id")
    return value if isinstance(value, uuid.UUID) else None


def application_of(fields: Mapping[str, Any]) -> uuid.UUID | None:
    value = fields.get("application_id")
    return value if isinstance(value, uuid.UUID) else None


# -- delivery outcomes and retries ------------------------------------------------------------


class DeliveryError(Exception):
    """A provider did not take the message."""

    permanent: bool = False


class TemporaryFailure(DeliveryError):
    """Worth trying again later: SMTP 4xx, connection lost, timeout, webhook 5xx or 429."""


class PermanentFailure(DeliveryError):
    """Trying again cannot help: SMTP 5xx, webhook 4xx."""

    permanent = True


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter: base * 2^(n-1), capped, times a random 50-100%."""

    max_attempts: int = 6
    base_s: float = 5.0
    max_s: float = 900.0

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling: float = min(self.max_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 60))
        draw: float = rng.random() if rng is not None else random.random()
        return ceiling * (0.5 + 0.5 * draw)


@dataclass(frozen=True)
class Sent:
    provider_message_id: str


@dataclass(frozen=True)
class RetryLater:
    delay_s: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str
    permanent: bool


Outcome = Sent | RetryLater | GiveUp


def decide(
    attempts: int,
    result: str | DeliveryError,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Outcome:
    """What a delivery attempt (the ``attempts``-th) leads to."""
    if isinstance(result, str):
        return Sent(result)
    reason = f"{'permanent' if result.permanent else 'temporary'}: {result}"
    if result.permanent:
        return GiveUp(reason, permanent=True)
    if attempts >= policy.max_attempts:
        return GiveUp(f"gave up after {attempts} attempts; last {reason}", permanent=False)
    return RetryLater(policy.delay_s(attempts, rng), reason)


def mask_address(address: str) -> str:
    """``t****@example.jp`` for the operators' list: enough to recognise, not to collect."""
    if "@" in address:
        local, domain = address.split("@", 1)
        return f"{local[:1]}****@{domain}"
    return re.sub(r"(https?://[^/]+).*", r"\1/…", address)


# -- resends (operators send a dead notification again) --------------------------------------


class ResendRefused(Exception):
    """The notification's state, or its recipient now, rules a resend out (409)."""

    error = "ResendRefused"


class AlreadyDelivered(ResendRefused):
    error = "AlreadyDelivered"


class AlreadyPending(ResendRefused):
    """Being resent already, or still waiting for a retry: the sender has it."""

    error = "AlreadyPending"


class NoCurrentAddress(ResendRefused):
    """No contact any more, an opt-out, or a staff target taken out of ``NOTIFY_STAFF``."""

    error = "NoCurrentAddress"


def check_resendable(status: NotificationStatus) -> None:
    """Only a dead notification is sent again; anything else is refused, saying why."""
    if status is NotificationStatus.SENT:
        raise AlreadyDelivered("already delivered: there is nothing to send again")
    if status is not NotificationStatus.DEAD:
        raise AlreadyPending(
            f"already waiting to be sent ({status.value}: resent, or waiting for a retry); "
            "see GET /notifications/pending"
        )


def applicant_in_key(recipient_key: str) -> uuid.UUID | None:
    """The applicant of an ``applicant:<uuid>`` recipient key."""
    prefix = f"{RecipientKind.APPLICANT.value}:"
    if not recipient_key.startswith(prefix):
        return None
    try:
        return uuid.UUID(recipient_key.removeprefix(prefix))
    except ValueError:
        return None


def current_applicant_address(contact: Contact | None, kind: NotificationKind | None) -> str:
    """Where an applicant's notification goes now: the contact's e-mail, unless the contact
    is gone or opted out of the kind."""
    if contact is None:
        raise NoCurrentAddress("the applicant has no contact any more (PUT /contacts/{id})")
    if kind is not None and kind in contact.opt_outs:
        raise NoCurrentAddress(f"the applicant opted out of {kind.value} notifications")
    return contact.email


def current_staff_address(recipient_key: str, staff: Mapping[str, Sequence[str]]) -> str:
    """A staff target is sent again while ``NOTIFY_STAFF`` still names it for its group."""
    _, group, uri = [*recipient_key.split(":", 2), "", ""][:3]
    if uri not in staff.get(group, ()):
        raise NoCurrentAddress(f"NOTIFY_STAFF no longer has this target in group {group!r}")
    return Target.parse(uri).address
