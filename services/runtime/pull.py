"""The consumers' pull loop: fetch a batch from a durable JetStream consumer, hand it on, repeat.

Built on nats-py's public pull API (``pull_subscribe_bind``, ``PullSubscription.fetch``). A
batch is up to ``batch_size`` messages, taken within ``max_wait_s`` of the first fetch (nats-py
may return part of a batch early, so the loop fetches again for the rest until the time is up).

Why not FastStream's batch pull subscriber: its loop catches only ``nats.errors.TimeoutError``,
while nats-py 2.16's ``fetch`` also raises the built-in ``TimeoutError`` when its deadline runs
out after the no-wait probe; the loop's task then died with the part of the batch it had
fetched, which came back only after ``ack_wait`` (upstream: nats-io/nats.py#1008, the fix of
that regression from #934). ``fetch_batch`` catches the built-in one, which covers both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.runtime.outage import Availability

log = logging.getLogger(__name__)

FAILURE_PAUSE_S = 1.0
"""Pause after a fetch fails for another reason than a timeout (the connection is down)."""


async def fetch_batch(
    sub: JetStreamContext.PullSubscription, batch_size: int, max_wait_s: float
) -> list[Msg]:
    """Up to ``batch_size`` messages fetched within ``max_wait_s``; none if none came. A
    failure after part of the batch came returns that part (it is the stream's, in order); the
    next call meets the failure again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    msgs: list[Msg] = []
    while len(msgs) < batch_size:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            msgs += await sub.fetch(batch_size - len(msgs), timeout=remaining)
        except TimeoutError:  # nats' own and the built-in one (nats-io/nats.py#1008)
            break
        except Exception:
            if not msgs:
                raise
            break
    return msgs


class PullLoop:
    """Fetches batches from one durable consumer and hands each to ``submit`` until stopped;
    while ``availability`` is down (the database does not answer), fetches nothing."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        durable: str,
        stream: str,
        inbox_prefix: str,
        batch_size: int,
        max_wait_s: float,
        submit: Callable[[Sequence[Msg]], Awaitable[None]],
        availability: Availability | None = None,
    ) -> None:
        self._js = js
        self.durable = durable
        self._stream = stream
        self._inbox_prefix = inbox_prefix
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._submit = submit
        self._availability = availability
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        # Its pull replies come on the service's own inboxes, the only ones it may read.
        self._sub = await self._js.pull_subscribe_bind(
            durable=self.durable,
            stream=self._stream,
            inbox_prefix=f"{self._inbox_prefix}.".encode(),
        )
        self._task = asyncio.create_task(self._run(self._sub), name=f"{self.durable}-pull")

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            if self._availability is not None and not self._availability.up:
                await self._until_available()
                continue
            try:
                msgs = await fetch_batch(sub, self._batch_size, self._max_wait_s)
                if msgs:
                    # Returns once the batch is decoded and queued: the next fetch overlaps
                    # this batch's transaction.
                    await self._submit(msgs)
            except Exception as exc:
                # Unacked, whatever was fetched comes back after ack_wait.
                log.warning("pull failed", extra={"durable": self.durable, "error": repr(exc)})
                await self._pause()

    async def _until_available(self) -> None:
        """Wait (fetching nothing, so JetStream delivers nothing) until the database answers
        again or the loop is stopped."""
        assert self._availability is not None
        waits = [
            asyncio.ensure_future(self._availability.wait_up()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=FAILURE_PAUSE_S)

    async def stop(self) -> None:
        """Stop fetching: the fetch in hand (at most ``max_wait_s``) is handed on first."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._sub is not None:
            await self._sub.unsubscribe()
