"""Events and commands of the notifications service (通知)."""

from __future__ import annotations

from pydantic import BaseModel

from contracts.envelope import Event

EVENTS: tuple[type[Event], ...] = ()
COMMANDS: tuple[type[BaseModel], ...] = ()
