"""Projection lag (反映遅延): how far the read-models are behind the event log.

For each durable consumer: ``events_behind`` is the number of events of its subjects that are
in the stream but not yet applied (JetStream's pending plus delivered-but-unacked count; acks
follow the commit), ``last_applied_seq`` the stream sequence below which everything is applied
(the ack floor), and ``seconds_behind`` the age of the oldest event not yet applied (0 when
nothing is behind).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field

from services.runtime.service import ConsumerBinding


class ConsumerLag(BaseModel):
    consumer: str
    stream: str
    stream_last_seq: int = Field(description="Sequence of the newest event in the stream.")
    last_applied_seq: int = Field(description="Every event up to this sequence is applied.")
    events_behind: int = Field(description="Events of this consumer's subjects not applied.")
    seconds_behind: float = Field(description="Age of the oldest event not applied; 0 if none.")


async def projection_lag(
    js: JetStreamContext, namespace: str, bindings: Sequence[ConsumerBinding]
) -> list[ConsumerLag]:
    now = datetime.now(UTC)
    lags = []
    for binding in bindings:
        decl = binding.decl
        stream = decl.stream.stream_name(namespace)
        stream_info = await js.stream_info(stream)
        info = await js.consumer_info(stream, decl.durable)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        behind = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        seconds = 0.0
        if behind:
            oldest: datetime | None = None
            for subject in decl.subjects:
                with contextlib.suppress(NotFoundError):
                    msg = await js.get_msg(
                        stream, seq=floor + 1, subject=f"{namespace}.{subject}", next=True
                    )
                    if msg.time is not None and (oldest is None or msg.time < oldest):
                        oldest = msg.time
            if oldest is not None:
                seconds = max(0.0, (now - oldest).total_seconds())
        lags.append(
            ConsumerLag(
                consumer=decl.durable,
                stream=stream,
                stream_last_seq=stream_info.state.last_seq,
                last_applied_seq=floor,
                events_behind=behind,
                seconds_behind=round(seconds, 3),
            )
        )
    return lags
