"""Applications' rules: pure functions and values, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.applications import ApplicationSubmittedV1, Channel


class ApplicationStatus(StrEnum):
    SUBMITTED = "submitted"


@dataclass(frozen=True)
class Application:
    """An application (申請) for one procedure, through one channel."""

    id: uuid.UUID
    procedure_code: str
    channel: Channel
    status: ApplicationStatus
    submitted_at: datetime


def submit(
    procedure_code: str,
    channel: Channel,
    now: datetime,
    application_id: uuid.UUID | None = None,
) -> tuple[Application, ApplicationSubmittedV1]:
    """A new application and the event that announces it."""
    if now.tzinfo is None:
        raise ValueError("submission time must be timezone-aware")
    app = Application(
        id=application_id or uuid.uuid4(),
        procedure_code=procedure_code,
        channel=channel,
        status=ApplicationStatus.SUBMITTED,
        submitted_at=now,
    )
    event = ApplicationSubmittedV1(
        application_id=app.id,
        procedure_code=app.procedure_code,
        channel=app.channel,
        submitted_at=app.submitted_at,
    )
    return app, event
