"""Consumers pause while the database is unavailable, so an outage costs no deliveries.

JetStream counts every delivery of a message (``num_delivered``), and a message NAKed with a
delay comes back when the delay is over, outage or not. A consumer that kept fetching through
an outage would spend a delivery per back-off step on every message of the backlog; with any
finite bound, a long enough outage dead-letters healthy events. So when a batch fails because
the database is unavailable (``db.is_transient``), the consumer NAKs it and trips the
process's ``Availability``: the pull loops fetch nothing until a probe (``SELECT 1``) answers
again. Nothing is delivered in between, so an outage of any length adds at most one delivery
to each message that was in hand when it began. Poison is counted apart, by the consumer's
own count of handler failures (``consumer.py``), never by ``num_delivered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]
"""Raises while the dependency is unavailable (the pool's ``SELECT 1``)."""


class Availability:
    """Whether the database answers. ``lost`` closes it (and starts probing); the pull loops
    wait in ``wait_up`` before each fetch; the first probe that answers opens it again."""

    def __init__(self, probe: Probe, interval_s: float, name: str = "database") -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._name = name
        self._up = asyncio.Event()
        self._up.set()
        self._probing: asyncio.Task[None] | None = None
        self._down_since = 0.0
        self.outages = 0
        """How many times it was lost (for tests and logs)."""

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def lost(self, error: BaseException) -> None:
        """An infrastructure failure: stop fetching until the probe answers."""
        if self._up.is_set():
            self._up.clear()
            self.outages += 1
            self._down_since = time.monotonic()
            log.warning(
                f"{self._name} unavailable; consumers paused until it answers",
                extra={"error": repr(error), "probe_every_s": self._interval_s},
            )
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(self._probe_until_up(), name="outage-probe")

    async def wait_up(self) -> None:
        await self._up.wait()

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await asyncio.wait_for(self._probe(), timeout=max(self._interval_s, 5.0))
            except Exception as exc:
                log.debug(f"{self._name} still unavailable", extra={"error": repr(exc)})
                continue
            log.warning(
                f"{self._name} answers again; consumers resumed",
                extra={"down_s": round(time.monotonic() - self._down_since, 1)},
            )
            self._up.set()
            return

    async def close(self) -> None:
        """Stop probing (at shutdown)."""
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probing
