"""Prefetching: a consumer's next batch is fetched and decoded while the last one is applied.

``Prefetching`` sits between a consumer's pull loop and its ``EventConsumer``: the pull loop
hands it each fetched batch, and one worker applies the decoded batches one at a time, in
fetch order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from nats.aio.msg import Msg

from services.runtime.consumer import Delivery, EventConsumer

log = logging.getLogger(__name__)


class Prefetching:
    """Feeds a consumer so that the next batch is fetched and decoded while the previous one's
    transaction runs in PostgreSQL, instead of after it.

    The subscriber calls ``submit`` with each fetched batch: it decodes the batch and queues it
    (waiting while ``depth`` batches are queued already), and returns, so the subscriber fetches
    again at once. One worker applies the queued batches one at a time, in the order they were
    fetched, so stream order and the one-transaction-per-batch rule are kept. On ``close`` the
    queued batches are applied and acked; batches submitted after it are NAKed at once, for
    another replica (or this one after a restart) to take.
    """

    def __init__(self, consumer: EventConsumer, depth: int = 1) -> None:
        self.consumer = consumer
        self._queue: asyncio.Queue[Sequence[Delivery]] = asyncio.Queue(maxsize=depth)
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, msgs: Sequence[Msg]) -> None:
        if self._closed:
            await self._give_back(msgs)
            return
        items = await self.consumer.decode_batch(msgs)
        if not items:
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"{self.consumer.name}-apply")
        # (Closed while waiting here: the batch is applied if the worker is still draining,
        # else it stays unacked and JetStream redelivers it after ack_wait. Nothing is lost.)
        await self._queue.put(items)

    async def _work(self) -> None:
        while not (self._closed and self._queue.empty()):
            items = await self._queue.get()
            try:
                await self.consumer.apply_batch(items)
            except Exception:
                # apply_batch NAKs or dead-letters what fails; this is a failure to do even
                # that (connection lost): the messages come back after ack_wait.
                log.exception("batch not applied", extra={"consumer": self.consumer.name})
            finally:
                self._queue.task_done()

    async def _give_back(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Apply and ack what is queued, then stop; later submissions are NAKed."""
        self._closed = True
        worker = self._worker
        if worker is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout=timeout_s)
        except TimeoutError:
            log.warning(
                "queued batches not applied in time", extra={"consumer": self.consumer.name}
            )
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
