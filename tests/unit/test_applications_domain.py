"""Applications' domain rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts import ApplicationSubmittedV1, Channel
from services.applications import domain


def test_submitting_records_the_channel_and_announces_it() -> None:
    now = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    app, event = domain.submit("JUMINHYO", Channel.COUNTER, now)
    assert app.status is domain.ApplicationStatus.SUBMITTED
    assert isinstance(event, ApplicationSubmittedV1)
    assert (event.application_id, event.channel, event.submitted_at) == (
        app.id,
        Channel.COUNTER,
        now,
    )
    assert event.aggregate_id() == str(app.id)


def test_a_naive_submission_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        domain.submit("JUMINHYO", Channel.ONLINE, datetime(2026, 11, 24))
