"""KPI answers kept in memory per read-model version (応答の再利用).

A KPI answer is a function of the read-models (and of the request's filters), and the
read-models change only when a projection batch commits. Each batch bumps its family's row of
``projection_versions`` in the same transaction (``projections.bump_version``; a rebuild's swap
bumps both), so an answer encoded once (JSON, CSV, open data, the KPI part of /metrics) is
served again, byte for byte, for as long as the versions it was computed under are the ones
PostgreSQL shows: one primary-key read per request instead of the queries, the Python rows
and the encoding. It is never stale: the version is read *before* the answer's queries, which
see that version's rows or newer ones, and any commit after it makes a new version, hence a
new key.

Bounded: least recently used answers are dropped once the encoded bytes kept (identity and
gzip) exceed ``max_bytes``; an answer larger than a quarter of the budget is served but not
kept. Concurrent requests for an answer that is being computed wait for that computation
instead of repeating it.

Each answer carries a strong ``ETag`` (a hash of its bytes): ``If-None-Match`` naming it is
answered 304 without a body. With ``Accept-Encoding: gzip`` a body of more than
``GZIP_MIN_BYTES`` is sent compressed (zlib-ng, level ``GZIP_LEVEL``, compressed once per kept
answer); a year of open data is 3.9 MB of JSON and 0.3 MB gzipped.

An answer joined from kept parts (``Chunk``: a month of open data) is hashed and compressed
part by part: its ETag is a hash of its chunks' digests, and its gzip member is its chunks'
raw deflate streams, each compressed once and ended on a byte boundary (``Z_SYNC_FLUSH``), one
after the other, then a final empty block and the CRC-32 combined from the chunks' (the way
pigz compresses in parallel). A new batch then costs the hashing and compressing of the month
it changed, not of the whole year.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from zlib_ng import zlib_ng

GZIP_MIN_BYTES = 1400
"""Smaller bodies fit in one packet as they are."""
GZIP_LEVEL = 2
"""zlib-ng's level 2: a year of open data (3.9 MB) to 7.8 % of its size in 4.6 ms, the year's
revenue (1.6 MB) to 13.4 % in 3.4 ms; zlib's level 3 took 11.9 and 8.7 ms for 6.6 and 13.2 %
(zlib-ng level 1: 3.3 ms, 9.7 %; level 3: 7.9 ms, 6.7 %; this machine, 2026-12-05). A cold
answer is compressed while its reader waits, so speed wins over the last few percent."""
OVERHEAD_BYTES = 400
"""Counted per kept answer beside its bytes (the entry, its key, its headers)."""


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""A gzip member's header (RFC 1952): deflate, no flags, no time, unknown OS."""
DEFLATE_END = b"\x03\x00"
"""An empty final deflate block (fixed Huffman): ends the chunks' stream."""


class Chunk:
    """Bytes of answers kept to be joined into more than one of them (a month of the year's
    open data), with what each answer would otherwise hash and compress again: their SHA-256
    digest, and their raw deflate stream with its CRC-32, computed once, when first needed."""

    __slots__ = ("_crc", "_deflated", "_digest", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._digest: bytes | None = None
        self._deflated: bytes | None = None
        self._crc = 0

    def __len__(self) -> int:
        return len(self.data)

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = hashlib.sha256(self.data).digest()
        return self._digest

    def deflated(self) -> tuple[bytes, int]:
        """The data as raw deflate blocks, none of them final, ending on a byte boundary (a
        sync flush): streams made so can follow one another; and the data's CRC-32."""
        if self._deflated is None:
            compressor = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, -15)  # -15: raw
            self._deflated = compressor.compress(self.data) + compressor.flush(zlib_ng.Z_SYNC_FLUSH)
            self._crc = zlib_ng.crc32(self.data)
        return self._deflated, self._crc


def gzip_chunks(chunks: Iterable[Chunk]) -> bytes:
    """One gzip member of the chunks' data, from each chunk's deflate stream."""
    out = [GZIP_HEADER]
    crc = size = 0
    for chunk in chunks:
        if not chunk.data:
            continue
        deflated, chunk_crc = chunk.deflated()
        out.append(deflated)
        crc = zlib_ng.crc32_combine(crc, chunk_crc, len(chunk.data))
        size += len(chunk.data)
    out.append(DEFLATE_END)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


@dataclass
class Answer:
    """One encoded KPI answer: its body, how to serve it, and its strong validator; and, for
    an answer joined from kept parts (``Answer.joined``), the chunks its body is made of."""

    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""
    gzipped: bytes | None = None
    chunks: tuple[Chunk, ...] = ()

    def __post_init__(self) -> None:
        if not self.etag:
            if self.chunks:  # the chunks make the body: their digests name it
                digests = hashlib.sha256(b"chunks")
                for chunk in self.chunks:
                    digests.update(chunk.digest)
                self.etag = '"' + digests.hexdigest()[:32] + '"'
            else:
                # SHA-256 runs on the CPU's SHA instructions: 2.2 ms for 4 MB, BLAKE2b 4.2
                self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @classmethod
    def joined(
        cls, pieces: Iterable[bytes | Chunk], media_type: str, headers: dict[str, str] | None = None
    ) -> Answer:
        """The answer whose body is ``pieces`` one after the other: kept chunks, and bytes of
        this answer alone between them (joined into one chunk each run)."""
        chunks: list[Chunk] = []
        loose: list[bytes] = []
        for piece in pieces:
            if isinstance(piece, Chunk):
                if loose:
                    chunks.append(Chunk(b"".join(loose)))
                    loose = []
                chunks.append(piece)
            else:
                loose.append(piece)
        if loose:
            chunks.append(Chunk(b"".join(loose)))
        return cls(
            b"".join(c.data for c in chunks), media_type, headers or {}, chunks=tuple(chunks)
        )

    @property
    def gzip_etag(self) -> str:
        """The gzip representation's validator (a strong ETag names one encoding)."""
        return self.etag[:-1] + '-gz"'

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"") + OVERHEAD_BYTES


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    not_kept: int = 0


Versions = tuple[int, ...]
"""The versions of the read-model families an answer was computed from."""


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
        self._evict()

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

    def gzipped(self, key: Hashable, answer: Answer) -> bytes:
        """The answer's body gzipped, compressed once and kept with it."""
        if answer.gzipped is None:
            kept = self._answers.get(key)
            if answer.chunks:
                gzipped = gzip_chunks(answer.chunks)
            else:
                compressor = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, 31)  # 31: gzip
                gzipped = compressor.compress(answer.body) + compressor.flush()
            answer.gzipped = gzipped
            if kept is not None and kept[1] is answer:
                self.bytes += len(gzipped)
                if answer.size > self.max_bytes // 4:
                    del self._answers[key]
                    self.bytes -= answer.size
                    self.stats.not_kept += 1
                self._evict()
        return answer.gzipped

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._answers.popitem(last=False)
            self.bytes -= dropped.size
            self.stats.evictions += 1


class MonthParts:
    """Encoded rows of one month of read-models, kept per that month's version (migration
    0013: statement triggers give a month of a table a new version whenever its rows change).

    An answer that lists a long period month by month (the year's open data: 40,000 rows of
    online usage; the year's revenue: 12,000 facility-days) is rebuilt whenever its family
    changes, which is every event batch; the batch changed one month's rows, nearly always the
    current one. With the parts, the rebuild queries and encodes only the months whose version
    moved and joins the kept parts of the others. Never stale, for the same reason as the
    answers: the versions are read before the rows, and rows read later are of that version
    or newer.

    A part is whatever its answer keeps of a month (JSON bytes, or bytes per facility with
    sums), with its size in bytes. Bounded like the answers: least recently used parts are
    dropped past ``max_bytes``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._parts: OrderedDict[Hashable, tuple[int, Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parts)

    def get(self, key: Hashable, version: int) -> Any | None:
        kept = self._parts.get(key)
        if kept is None or kept[0] != version:
            self.stats.misses += 1
            return None
        self._parts.move_to_end(key)
        self.stats.hits += 1
        return kept[1]

    async def assemble(
        self,
        kind: Hashable,
        versions: Mapping[date, int],
        build: Callable[[list[date]], Awaitable[Mapping[date, tuple[Any, int]]]],
    ) -> dict[date, Any]:
        """Every month of ``versions`` with its part, in month order: the kept ones, and for
        the others what ``build`` makes of them (given those months, it returns each one's
        part and size in bytes; a month it leaves out has no rows: an empty part), kept."""
        found: dict[date, Any] = {}
        missing = []
        for month, version in versions.items():
            part = self.get((kind, month), version)
            if part is None:
                missing.append(month)
            else:
                found[month] = part
        if missing:
            built = await build(missing)
            for month in missing:
                part, size = built.get(month, ((), 0))
                self.put((kind, month), versions[month], part, size)
                found[month] = part
        return {month: found[month] for month in sorted(found)}

    def put(self, key: Hashable, version: int, part: Any, size: int) -> None:
        old = self._parts.get(key)
        if old is not None:
            if old[0] > version:  # a newer part is kept already (this one took longer)
                return
            del self._parts[key]
            self.bytes -= old[2]
        size += OVERHEAD_BYTES
        if size > self.max_bytes // 4:
            self.stats.not_kept += 1
            return
        self._parts[key] = (version, part, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, dropped) = self._parts.popitem(last=False)
            self.bytes -= dropped
            self.stats.evictions += 1


def _tags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header, compared weakly (RFC 9110 13.1.2)."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def respond(request: Request, cache: AnswerCache, key: Hashable, answer: Answer) -> Response:
    """The answer as the request asks for it: 304 when If-None-Match names it, gzipped when
    the client accepts gzip and it helps, else as encoded."""
    gzip = len(answer.body) > GZIP_MIN_BYTES and _accepts_gzip(
        request.headers.get("accept-encoding", "")
    )
    etag = answer.gzip_etag if gzip else answer.etag
    headers = {
        **answer.headers,
        "ETag": etag,
        "Vary": "Accept-Encoding",
        # caches may keep it but must ask again (the figures change with every event)
        "Cache-Control": "no-cache",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = _tags(if_none_match)
        if "*" in tags or answer.etag in tags or answer.gzip_etag in tags:
            return Response(status_code=304, headers=headers)
    if gzip:
        headers["Content-Encoding"] = "gzip"
        return Response(cache.gzipped(key, answer), media_type=answer.media_type, headers=headers)
    return Response(answer.body, media_type=answer.media_type, headers=headers)
