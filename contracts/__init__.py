"""cityhall's shared vocabulary: events, subjects, streams and the envelope.

The only package every service imports from another's world. ``EVENT_TYPES`` maps each
CloudEvents ``type`` to its pydantic model; a consumer looks the model up here.
"""

from __future__ import annotations

from contracts.applications import ApplicationSubmittedV1, Channel, SubmitApplication
from contracts.envelope import Envelope, EnvelopeError, Event, RawEvent
from contracts.subjects import STREAMS, StreamDecl

ALL_EVENTS: tuple[type[Event], ...] = (ApplicationSubmittedV1,)
EVENT_TYPES: dict[str, type[Event]] = {e.event_type: e for e in ALL_EVENTS}

__all__ = [
    "ALL_EVENTS",
    "EVENT_TYPES",
    "STREAMS",
    "ApplicationSubmittedV1",
    "Channel",
    "Envelope",
    "EnvelopeError",
    "Event",
    "RawEvent",
    "StreamDecl",
    "SubmitApplication",
]
