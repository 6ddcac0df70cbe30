"""The consumers' pull loop (services/runtime/pull.py): nats-py 2.16's ``fetch`` sometimes
raises the built-in ``TimeoutError`` instead of nats' own (upstream nats-io/nats.py#1008:
``_fetch_n`` raises it when its deadline runs out after the no-wait probe), which FastStream's
pull loop did not catch; ``fetch_batch`` catches both and keeps the part of a batch that came
before either. Whether a given empty fetch takes that path is a race between the server's
reply to the probe and the client's timer (docs/architecture.md), so the bug's own path is
reproduced with a subscription that ends its fetch as nats-py's does, and empty fetches on a
real server check that no timeout of either kind escapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from services.runtime.pull import fetch_batch

EMPTY_FETCHES = 50
"""Empty fetches on a real server: under load some end in the built-in TimeoutError."""


@pytest.fixture
async def empty_consumer(
    js: JetStreamContext, namespace: str
) -> AsyncIterator[JetStreamContext.PullSubscription]:
    stream = f"{namespace.upper()}_PULL"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{namespace}.pull.>"]))
    await js.add_consumer(stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT))
    sub = await js.pull_subscribe_bind("c", stream=stream)
    yield sub
    await sub.unsubscribe()
    await js.delete_stream(stream)


async def test_an_empty_batch_is_empty_whichever_timeout_error_fetch_raises(
    empty_consumer: JetStreamContext.PullSubscription,
) -> None:
    for _ in range(EMPTY_FETCHES):
        assert await fetch_batch(empty_consumer, 10, 0.05) == []


async def test_a_batch_brings_what_was_published_in_order(
    js: JetStreamContext, namespace: str, empty_consumer: JetStreamContext.PullSubscription
) -> None:
    for n in range(7):
        await js.publish(f"{namespace}.pull.x", f"m{n}".encode())
    got: list[Msg] = []
    while len(got) < 7:
        got += await fetch_batch(empty_consumer, 5, 0.05)
    assert [m.data.decode() for m in got] == [f"m{n}" for n in range(7)]


class _PartThenBuiltinTimeout:
    """A subscription whose second fetch ends as nats-py 2.16's does when its deadline runs
    out after the no-wait probe."""

    def __init__(self, first: list[Any]) -> None:
        self.calls = 0
        self.first = first

    async def fetch(self, batch: int, timeout: float | None = None) -> list[Any]:
        self.calls += 1
        if self.calls == 1:
            return self.first
        raise TimeoutError


async def test_the_part_of_a_batch_fetched_before_a_builtin_timeout_is_kept() -> None:
    sub: Any = _PartThenBuiltinTimeout(["a", "b"])
    assert await fetch_batch(sub, 10, 5.0) == ["a", "b"]
    assert sub.calls == 2
