"""Events and commands of the payments service (決済): captures, refunds, receipts, settlements."""

from __future__ import annotations

from pydantic import BaseModel

from contracts.envelope import Event

EVENTS: tuple[type[Event], ...] = ()
COMMANDS: tuple[type[BaseModel], ...] = ()
