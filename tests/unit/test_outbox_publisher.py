"""The relay's publisher refuses a batch when nats-py's pending publishes are at their limit
(slots ``publish_async`` left behind), instead of waiting for ever on a slot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.runtime.outbox import OutboxRow, PublishSlotsExhausted, jetstream_publisher


class _JetStreamWithSlotsLeftBehind:
    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.published = 0

    def publish_async_pending(self) -> int:
        return self.pending

    async def publish_async(self, *_args: Any, **_kwargs: Any) -> Any:
        self.published += 1
        raise AssertionError("nothing may be sent")


def _row(seq: int) -> OutboxRow:
    return OutboxRow(
        seq=seq,
        event_id=f"e{seq}",
        subject="applications.application.submitted.v1",
        ce_type="jp.koriyama.cityhall.test.v1",
        ce_source="/cityhall/tests",
        ce_subject="slots",
        ce_time=datetime.now(UTC),
        trace_headers={},
        payload="{}",
    )


async def test_a_batch_that_would_pass_the_pending_limit_fails_without_sending() -> None:
    js: Any = _JetStreamWithSlotsLeftBehind(pending=9)
    publish = jetstream_publisher(js, "ns", lambda _s: "NS_APPLICATIONS", max_pending=10)

    results = await publish([_row(1), _row(2)])

    assert all(isinstance(r, PublishSlotsExhausted) for r in results)
    assert len(results) == 2
    assert js.published == 0
