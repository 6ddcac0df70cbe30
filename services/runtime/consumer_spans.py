"""The CONSUMER spans of the events a consumer applies (OpenTelemetry messaging conventions).

One event gets a span that is a child of its producer's span; a run of events a ``Batched``
handler takes together gets one span linked to each producer's span, and, when spans are
recorded, each event of it a span of its own too, so a request stays one trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from services.runtime.telemetry import context_from_headers

if TYPE_CHECKING:
    from services.runtime.consumer import Delivery

tracer = trace.get_tracer("cityhall.consumer")

TAGGED_IDS = ("application_id", "payment_id")
"""Fields of an event's data named on its CONSUMER span as ``cityhall.<field>``."""

MAX_SPAN_LINKS = 128
"""Links to producers' spans kept on one batch span (the SDK's default limit)."""


def _link(headers: Mapping[str, str]) -> Link | None:
    context = trace.get_current_span(context_from_headers(headers)).get_span_context()
    return Link(context) if context.is_valid else None


def event_spans(
    consumer: str, run: Sequence[Delivery], batch: Span, start_ns: int, end_ns: int
) -> None:
    """When spans are recorded, each event of a run also gets its CONSUMER span, a child
    of its producer's span lasting as long as the run and linked to the run's span: a
    request stays one trace even when its event was applied with others."""
    link = Link(batch.get_span_context())
    for item in run:
        env = item.envelope
        span = tracer.start_span(
            f"{item.msg.subject} process",
            context=context_from_headers(env.trace_headers),
            kind=SpanKind.CONSUMER,
            attributes=_attributes(consumer, item, one_event=True),
            links=[link],
            start_time=start_ns,
        )
        span.end(end_time=end_ns)


def _attributes(consumer: str, item: Delivery, *, one_event: bool) -> dict[str, Any]:
    """A CONSUMER span's attributes; the event's own id and subject when it is one
    event's span."""
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation": "process",
        "messaging.destination.name": item.msg.subject,
        "messaging.consumer.group.name": consumer,
        "cloudevents.event_type": item.envelope.type,
    }
    if one_event:
        attributes["messaging.message.id"] = item.envelope.id
        attributes["cloudevents.event_subject"] = item.envelope.subject
        for name in TAGGED_IDS:  # what `cityhall trace <id>` looks for
            if (value := getattr(item.envelope.data, name, None)) is not None:
                attributes[f"cityhall.{name}"] = str(value)
    return attributes


def run_span(consumer: str, run: Sequence[Delivery]) -> AbstractContextManager[Span]:
    """The CONSUMER span of one event (a child of its producer's span), or of a run of
    events taken together (linked to each producer's span, as OpenTelemetry's messaging
    conventions do for a batch)."""
    first = run[0]
    attributes = _attributes(consumer, first, one_event=len(run) == 1)
    if len(run) == 1:
        env = first.envelope
        return tracer.start_as_current_span(
            f"{first.msg.subject} process",
            context=context_from_headers(env.trace_headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
    attributes["messaging.batch.message_count"] = len(run)
    links: list[Link] = []
    seen: set[str] = set()
    for item in run:
        parent = item.envelope.trace_headers.get("traceparent")
        if parent and parent not in seen and len(links) < MAX_SPAN_LINKS:
            seen.add(parent)
            if (link := _link(item.envelope.trace_headers)) is not None:
                links.append(link)
    return tracer.start_as_current_span(
        f"{consumer} process {first.envelope.type}",
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )


def record_failure(span: Span, exc: Exception) -> None:
    """Mark the span of a handler that raised."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))
