"""cityhall's shared vocabulary: events, commands, subjects, streams and the envelope.

The only package every service imports from another's world. One module per producing service
(``applications``, ``payments``, ``notifications``) declares its ``EVENTS`` and ``COMMANDS``;
``EVENT_TYPES`` maps each CloudEvents ``type`` to its pydantic model, and a consumer looks the
model up there.
"""

from __future__ import annotations

from pydantic import BaseModel

from contracts import applications, notifications, payments
from contracts.applications import ApplicationSubmittedV1, Channel, SubmitApplication
from contracts.envelope import Envelope, EnvelopeError, Event, RawEvent
from contracts.subjects import STREAMS, StreamDecl

_MODULES = (applications, payments, notifications)

ALL_EVENTS: tuple[type[Event], ...] = tuple(e for m in _MODULES for e in m.EVENTS)
ALL_COMMANDS: tuple[type[BaseModel], ...] = tuple(c for m in _MODULES for c in m.COMMANDS)
EVENT_TYPES: dict[str, type[Event]] = {e.event_type: e for e in ALL_EVENTS}

if len(EVENT_TYPES) != len(ALL_EVENTS):
    raise RuntimeError("two events share a CloudEvents type")

__all__ = [
    "ALL_COMMANDS",
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
