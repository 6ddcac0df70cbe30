"""The event envelope: CloudEvents 1.0 attributes carried as NATS headers.

cityhall uses the CloudEvents NATS protocol binding in *binary* mode: every context attribute
travels as a NATS header named ``ce-<attribute>`` (``ce-id``, ``ce-source``, ``ce-type``,
``ce-specversion``, ``ce-time``, ``ce-subject``), ``datacontenttype`` travels as ``content-type``,
and the body is the event's JSON payload. The CloudEvents id is also the JetStream
``Nats-Msg-Id``, so the server drops a re-publish of the same event inside the stream's duplicate
window; consumers dedupe for ever with their inbox table. W3C ``traceparent``/``tracestate``
headers ride along so one trace spans producer and consumers.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
NATS_MSG_ID = "Nats-Msg-Id"
TRACE_HEADERS = ("traceparent", "tracestate")

CE_ID = "ce-id"
CE_SOURCE = "ce-source"
CE_TYPE = "ce-type"
CE_SPECVERSION = "ce-specversion"
CE_TIME = "ce-time"
CE_SUBJECT = "ce-subject"
CONTENT_TYPE_HEADER = "content-type"

TYPE_PREFIX = "jp.koriyama.cityhall"


class Event(BaseModel):
    """Base of every integration event payload.

    A subclass declares ``event_type`` (the CloudEvents ``type``, ending in its version) and
    ``subject`` (the NATS subject, relative to the deployment's namespace). Extra fields are
    forbidden on input: a producer that adds a field needs a new version of the event, so that a
    consumer never silently ignores data it does not understand.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    subject: ClassVar[str]
    version: ClassVar[int] = 1

    def aggregate_id(self) -> str:
        """The CloudEvents ``subject``: the id of the thing this event is about."""
        raise NotImplementedError

    @classmethod
    def source(cls) -> str:
        """The CloudEvents ``source``: the producer its type names, so the two never disagree
        (``jp.koriyama.cityhall.payments.PaymentCaptured.v1`` -> ``/cityhall/payments``)."""
        producer = cls.event_type.removeprefix(f"{TYPE_PREFIX}.").split(".", 1)[0]
        return f"/cityhall/{producer}"


E = TypeVar("E", bound=Event)


class EnvelopeError(ValueError):
    """A message whose headers or body do not make a valid cityhall event."""


@dataclass(frozen=True)
class Envelope(Generic[E]):
    """One event with its CloudEvents context attributes."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str
    data: E
    trace_headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        data: E,
        *,
        source: str | None = None,
        time: datetime | None = None,
        id: str | None = None,
    ) -> Envelope[E]:
        """A new event; its ``source`` is its type's producer (``Event.source``), given here
        only by someone publishing in another's name (a test, a simulated terminal)."""
        when = time or datetime.now(UTC)
        if when.tzinfo is None:
            raise ValueError("event time must be timezone-aware")
        return cls(
            id=id or str(uuid.uuid4()),
            source=source or data.source(),
            type=data.event_type,
            time=when,
            subject=data.aggregate_id(),
            data=data,
        )

    def headers(self) -> dict[str, str]:
        """The NATS headers of this event (binary content mode)."""
        return cloudevent_headers(
            id=self.id,
            source=self.source,
            type=self.type,
            time=self.time,
            subject=self.subject,
            trace_headers=self.trace_headers,
        )

    def body(self) -> bytes:
        return self.data.model_dump_json().encode()


def cloudevent_headers(
    *,
    id: str,
    source: str,
    type: str,
    time: datetime,
    subject: str | None = None,
    msg_id: str | None = None,
    trace_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The NATS headers of one event (binary content mode): its CloudEvents attributes, its
    ``Nats-Msg-Id`` (``msg_id``, else the event id) and its W3C trace headers (no others).
    The one builder: an ``Envelope``, the outbox relay's rows and the simulated terminals
    (which send no ``ce-subject``) use it."""
    headers = {
        CE_SPECVERSION: SPEC_VERSION,
        CE_ID: id,
        CE_SOURCE: source,
        CE_TYPE: type,
        CE_TIME: time.isoformat(),
        CONTENT_TYPE_HEADER: CONTENT_TYPE,
        NATS_MSG_ID: msg_id or id,
    }
    if subject is not None:
        headers[CE_SUBJECT] = subject
    if trace_headers:
        headers.update({k: v for k, v in trace_headers.items() if k in TRACE_HEADERS})
    return headers


@dataclass(frozen=True)
class RawEvent:
    """The CloudEvents context read from NATS headers, before the payload is validated."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str
    trace_headers: Mapping[str, str]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> RawEvent:
        headers = headers or {}
        missing = [h for h in (CE_ID, CE_SOURCE, CE_TYPE, CE_SPECVERSION) if not headers.get(h)]
        if missing:
            raise EnvelopeError(f"missing CloudEvents header(s): {', '.join(missing)}")
        if headers[CE_SPECVERSION] != SPEC_VERSION:
            raise EnvelopeError(f"unsupported ce-specversion {headers[CE_SPECVERSION]!r}")
        content_type = headers.get(CONTENT_TYPE_HEADER, CONTENT_TYPE)
        if not content_type.startswith(CONTENT_TYPE):
            raise EnvelopeError(f"unsupported content-type {content_type!r}")
        raw_time = headers.get(CE_TIME)
        try:
            time = datetime.fromisoformat(raw_time) if raw_time else None
        except ValueError as exc:
            raise EnvelopeError(f"ce-time is not ISO 8601: {raw_time!r}") from exc
        if time is None or time.tzinfo is None:
            raise EnvelopeError("ce-time must be present with a UTC offset")
        return cls(
            id=headers[CE_ID],
            source=headers[CE_SOURCE],
            type=headers[CE_TYPE],
            time=time,
            subject=headers.get(CE_SUBJECT, ""),
            trace_headers={k: headers[k] for k in TRACE_HEADERS if k in headers},
        )

    def parse(self, model: builtins.type[E], body: bytes) -> Envelope[E]:
        """Validate ``body`` against ``model``; raise EnvelopeError naming each bad field."""
        try:
            data = model.model_validate_json(body)
        except ValidationError as exc:
            raise EnvelopeError(describe_validation_error(exc)) from exc
        return Envelope(
            id=self.id,
            source=self.source,
            type=self.type,
            time=self.time,
            subject=self.subject,
            data=data,
            trace_headers=self.trace_headers,
        )


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field, e.g. ``channel: Input should be 'online', 'counter' or 'mail'``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def event_examples(model: type[Event]) -> list[dict[str, Any]]:
    """The examples declared in an event's JSON Schema (used by tests and docs)."""
    extra = model.model_config.get("json_schema_extra") or {}
    if isinstance(extra, dict):
        examples = extra.get("examples", [])
        if isinstance(examples, list):
            return [e for e in examples if isinstance(e, dict)]
    return []
