"""The runtime lets nats-py's ``Subscription.next_msg`` hand over already queued messages at
once (no task, wait_for and uuid per message). On a real NATS server: the same messages in the
same order, the subscription's bookkeeping kept, and an empty queue still waits and times out
as before."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from services.runtime.service import _next_msg_takes_queued_messages_at_once


async def test_queued_messages_come_at_once_in_order_and_an_empty_queue_still_waits(
    nc: NATS, namespace: str
) -> None:
    _next_msg_takes_queued_messages_at_once()
    subject = f"{namespace}.probe.next-msg"
    sub = await nc.subscribe(subject)
    for n in range(50):
        await nc.publish(subject, f"m{n}".encode())
    await nc.flush()
    for _ in range(100):  # until the read loop has queued all 50
        if sub._pending_queue.qsize() == 50:
            break
        await asyncio.sleep(0.01)
    assert sub._pending_queue.qsize() == 50

    got = [(await sub.next_msg(timeout=1)).data.decode() for _ in range(50)]

    assert got == [f"m{n}" for n in range(50)]
    assert sub.pending_msgs == 0
    assert sub.pending_bytes == 0
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.05)  # empty: nats-py's own wait, as before
    await nc.publish(subject, b"later")
    assert (await sub.next_msg(timeout=1)).data == b"later"  # arrives while waiting
    await sub.unsubscribe()
