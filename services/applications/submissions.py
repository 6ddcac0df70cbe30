"""Group commit (まとめて書き込み) of online submissions: the busiest command, written in batches.

Each POST /applications used to take a pooled connection for its own transaction: BEGIN, the
application with its Idempotency-Key, the outbox rows, COMMIT and the pool's reset of the
connection, five round trips to PostgreSQL whose socket writes and wake-ups cost the service
more CPU than the rest of the request. ``SubmissionWriter`` writes the submissions that are
waiting together instead, in one statement (``store.insert_submissions``: the applications,
their keys with the responses they will replay and their outbox rows, each event with its own
request's trace context), which PostgreSQL runs as one transaction; each request is answered
once that statement has committed.

There is no timer: a submission is written at once when fewer than ``max_in_flight`` batches
are being written; otherwise it waits for one of them to end and goes with everything that
arrived meanwhile, on the same connection. A lone request thus waits for nobody, and under
load the batches grow by themselves to what the database takes in one round trip.

A submission the batch did not write (its key was already taken, its procedure has just
changed, the same key twice in one batch) or a batch that PostgreSQL refused as a whole (one
row it cannot store) is not an error: the caller takes the one-by-one path
(``handlers.submit_application``), where each request is decided, refused or replayed alone,
so one bad row fails only its own request. A database that is unreachable fails every request
of the batch, as it would have failed each of them alone (HTTP 503).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from services.applications import store
from services.applications.store import NewSubmission
from services.runtime.service import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)
Waiting = tuple[NewSubmission, "asyncio.Future[bool]"]

MAX_BATCH = 200
"""Submissions per statement at most (a few hundred kB of parameters)."""
MAX_IN_FLIGHT = 2
"""Batches written at once: one travels to PostgreSQL while the next one fills up."""


class SubmissionWriter:
    """Writes submissions in batches; one per running service (``ctx.provide``)."""

    def __init__(
        self, pool: asyncpg.Pool, *, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: list[Waiting] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
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
        self._start_flights()
        return await done

    def _start_flights(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = asyncio.create_task(self._fly(), name="applications-group-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Waiting]:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        return batch

    async def _fly(self) -> None:
        """Write batches on one connection as long as submissions keep arriving: under load
        the connection is not given back (and reset by the pool) between batches."""
        batch: list[Waiting] = []
        acquired = False
        try:
            async with self._pool.acquire() as conn:
                acquired = True
                while self._waiting:
                    batch = self._take()
                    await self._write(conn, batch)
                    batch = []
        except BaseException as exc:
            if not acquired:
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
            written = await store.insert_submissions(conn, [s for s, _ in together])
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
