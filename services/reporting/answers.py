"""KPI answers kept in memory per read-model version (応答の再利用).

A KPI answer is a function of the read-models (and of the request's filters), and the
read-models change only when a projection batch commits. Each batch bumps its family's row of
``projection_versions`` in the same transaction (``projections.bump_version``; a rebuild's swap
bumps both), so an answer encoded once (JSON, CSV, the KPI part of /metrics) is served again
for as long as the versions it was computed under are the ones PostgreSQL shows: one
primary-key read per request instead of the queries and the encoding. It is never stale: the
version is read *before* the answer's queries, which see that version's rows or newer ones,
and any commit after it makes a new version, hence a new key.

Bounded: least recently used answers are dropped once the bytes kept exceed ``max_bytes``; an
answer larger than a quarter of the budget is served but not kept. Concurrent requests for an
answer that is being computed wait for that computation instead of repeating it.

Each answer carries an ETag, a hash of its bytes: ``If-None-Match`` naming it is answered 304
without a body. The tag is weak (``W/"…"``) because Starlette's GZip middleware compresses
large answers for clients that accept gzip, and a strong tag would have to differ between the
plain and the gzipped bytes (RFC 9110 8.8.1); a weak one names the figures, whichever way they
travel, and revalidation (weak comparison) works the same for both.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response

OVERHEAD_BYTES = 400
"""Counted per kept answer beside its bytes (the entry, its key, its headers)."""


@dataclass
class Answer:
    """One encoded KPI answer: its body, how to serve it, and its validator."""

    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = 'W/"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @property
    def size(self) -> int:
        return len(self.body) + OVERHEAD_BYTES


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    not_kept: int = 0


Versions = tuple[int, ...]
"""The versions of the read-models an answer was computed from."""


class AnswerCache:
    """Least recently used answers within a byte budget: per request (path and filters), the
    answer computed under the newest versions seen, so an answer of older versions makes room
    as soon as a newer one is computed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._answers: OrderedDict[Hashable, tuple[Versions, Answer]] = OrderedDict()
        self._building: dict[tuple[Hashable, Versions], asyncio.Future[Answer]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: Hashable, versions: Versions) -> Answer | None:
        kept = self._answers.get(key)
        if kept is None or kept[0] != versions:
            return None
        self._answers.move_to_end(key)
        return kept[1]

    def put(self, key: Hashable, versions: Versions, answer: Answer) -> None:
        old = self._answers.get(key)
        if old is not None:
            if old[0] != versions and all(o >= v for o, v in zip(old[0], versions, strict=True)):
                return  # a newer answer is kept already (this one took longer)
            del self._answers[key]
            self.bytes -= old[1].size
        if answer.size > self.max_bytes // 4:
            self.stats.not_kept += 1
            return
        self._answers[key] = (versions, answer)
        self.bytes += answer.size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._answers.popitem(last=False)
            self.bytes -= dropped.size
            self.stats.evictions += 1

    async def get_or_build(
        self, key: Hashable, versions: Versions, build: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        answer = self.get(key, versions)
        if answer is not None:
            self.stats.hits += 1
            return answer
        building = (key, versions)
        pending = self._building.get(building)
        if pending is not None:  # the same answer is being computed: wait for it
            self.stats.hits += 1
            return await asyncio.shield(pending)
        self.stats.misses += 1
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._building[building] = future
        try:
            answer = await build()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(answer)
            self.put(key, versions, answer)
            return answer
        finally:
            del self._building[building]


def _names(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag``, compared weakly (RFC 9110 13.1.2)."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


def respond(request: Request, answer: Answer) -> Response:
    """The answer, or 304 when If-None-Match names it. Compression when the client accepts
    it, and the ``Vary: Accept-Encoding`` that goes with it, are the GZip middleware's
    (``services/runtime/server.py``)."""
    headers = {
        **answer.headers,
        "ETag": answer.etag,
        # caches may keep it but must ask again (the figures change with every event)
        "Cache-Control": "no-cache",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _names(if_none_match, answer.etag):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type=answer.media_type, headers=headers)
