"""Group commit (まとめて書き込み) of online submissions: the busiest command, written in batches.

Each POST /applications used to take a pooled connection for its own transaction: BEGIN, the
application with its Idempotency-Key, the outbox rows, COMMIT and the pool's reset of the
connection, five round trips to PostgreSQL whose socket writes and wake-ups cost the service
more CPU than the rest of the request. ``SubmissionWriter`` writes the submissions that are
waiting together instead, in one statement (``store.applications.insert_submissions``: the
applications, their keys with the responses they will replay and their outbox rows, each event
with its own request's trace context), which PostgreSQL runs as one transaction; each request is
answered once that statement has committed.

No submission waits for a timer: one is written at once when fewer than ``max_in_flight``
batches are being written; otherwise it waits for one of them to end and goes with everything
that arrived meanwhile. A lone request thus waits for nobody, and under load the batches grow
by themselves to what the database takes in one round trip. A writer keeps its connection
while submissions keep coming (``LINGER_S`` after the last one), so the pool's reset of the
connection (a round trip) is not paid per request either.

A submission the batch did not write (its key was already taken, its procedure has just
changed, the same key twice in one batch) or a batch that PostgreSQL refused as a whole (one
row it cannot store) is not an error: the caller takes the one-by-one path
(``handlers.submission._submit_alone``), where each request is decided, refused or replayed
alone, so one bad row fails only its own request. A database that is unreachable fails every
request of the batch, as it would have failed each of them alone (HTTP 503).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from services.applications.store import applications
from services.applications.store.applications import NewSubmission
from services.runtime.http_errors import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)
Waiting = tuple[NewSubmission, "asyncio.Future[bool]"]

MAX_BATCH = 200
"""Submissions per statement at most (a few hundred kB of parameters)."""
MAX_IN_FLIGHT = 2
"""Batches written at once: one travels to PostgreSQL while the next one fills up."""
LINGER_S = 0.02
"""How long a writer keeps its connection once nothing is waiting, for the next submission:
under steady load it then never goes back to the pool, whose reset (a round trip)
would otherwise follow every request. Nothing waits for this: a submission that arrives is
written at once."""


class SubmissionWriter:
    """Writes submissions in batches; one per running service (``ctx.provide``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        linger_s: float = LINGER_S,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        self._waiting: list[Waiting] = []
        self._arrived = asyncio.Event()
        self._idle = 0
        """Writers not writing: waiting for their connection, or lingering on it."""
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.flights = 0
        """Connections taken from the pool so far (each writes batches until idle)."""
        self.batches = 0
        """Statements written so far (with ``written``: the mean batch size)."""
        self.written = 0
        self.fallbacks = 0
        """Batches PostgreSQL refused as a whole, whose submissions went one by one."""

    async def write(self, submission: NewSubmission) -> bool:
        """True once the submission is committed; False when it was not written and must take
        the one-by-one path. Raises what an unreachable database raises."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((submission, done))
        self._arrived.set()
        self._start_flights()
        return await done

    def _start_flights(self) -> None:
        # A writer waiting for its connection or lingering on it takes everything waiting;
        # another one is started only when every writer is busy writing.
        while self._waiting and not self._idle and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            self._idle += 1  # until it has its connection
            self.flights += 1
            task = asyncio.create_task(self._fly(), name="applications-group-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Waiting]:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        return batch

    async def _more_arrive(self) -> bool:
        """Whether a submission arrives within ``linger_s`` (True at once if one is waiting)."""
        if self._waiting:
            return True
        if self._linger_s <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger_s
        self._idle += 1
        try:
            async with asyncio.timeout_at(deadline):
                while not self._waiting:  # another writer may have taken what woke this one
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            return False
        finally:
            self._idle -= 1
        return True

    async def _fly(self) -> None:
        """Write batches on one connection as long as submissions keep arriving: the
        connection is not given back (and reset by the pool) between batches, nor between
        submissions less than ``linger_s`` apart."""
        batch: list[Waiting] = []
        acquired = False
        try:
            async with self._pool.acquire() as conn:
                acquired = True
                self._idle -= 1
                while await self._more_arrive():
                    batch = self._take()
                    await self._write(conn, batch)
                    batch = []
        except BaseException as exc:
            if not acquired:
                self._idle -= 1
                batch = self._take()  # no connection: those waiting learn why
            for _, done in batch:
                _settle(done, exc)
            if not isinstance(exc, Exception):
                raise  # cancelled: its requests are told above
        finally:
            self._in_flight -= 1
            self._start_flights()

    async def _write(self, conn: asyncpg.Connection, batch: list[Waiting]) -> None:
        keys: set[str] = set()
        alone: list[asyncio.Future[bool]] = []
        together: list[Waiting] = []
        for submission, done in batch:
            claim = submission.claim
            if claim is not None and claim.key in keys:
                alone.append(done)  # the same key twice: the second one replays the first
                continue
            if claim is not None:
                keys.add(claim.key)
            together.append((submission, done))
        try:
            written = await applications.insert_submissions(conn, [s for s, _ in together])
        except DATABASE_UNAVAILABLE:
            raise
        except asyncpg.PostgresError as exc:
            # One row PostgreSQL cannot take refuses the whole statement (nothing was
            # written): each submission goes on alone, so only that one fails.
            self.fallbacks += 1
            log.warning(
                "group commit refused; its submissions go one by one",
                extra={"submissions": len(together), "error": repr(exc)},
            )
            written = set()
        self.batches += 1
        self.written += len(written)
        for submission, done in together:
            _settle(done, submission.application.id in written)
        for done in alone:
            _settle(done, False)


def _settle(done: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if done.done():  # its request was cancelled (the client went away)
        return
    if isinstance(outcome, asyncio.CancelledError):
        done.cancel()
    elif isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
