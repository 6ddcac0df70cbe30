"""The answer cache (services/reporting/answers.py) alone: byte budget, versions, coalescing."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.reporting.answers import OVERHEAD_BYTES, Answer, AnswerCache, Chunk


def answer(text: str, size: int = 100) -> Answer:
    return Answer(text.encode().ljust(size, b" "), "application/json")


async def test_the_least_recently_used_answer_goes_when_the_budget_is_spent() -> None:
    cache = AnswerCache(max_bytes=4 * (1000 + OVERHEAD_BYTES))
    for key in "abcd":
        cache.put(key, (1,), answer(key, 1000))
    assert len(cache) == 4
    assert cache.get("a", (1,)) is not None  # a is now the most recently used
    cache.put("e", (1,), answer("e", 1000))
    assert cache.get("b", (1,)) is None
    assert {k for k in "acde" if cache.get(k, (1,)) is not None} == set("acde")
    assert cache.bytes <= cache.max_bytes
    assert cache.stats.evictions == 1


async def test_an_answer_above_a_quarter_of_the_budget_is_served_but_not_kept() -> None:
    cache = AnswerCache(max_bytes=4000)

    async def build() -> Answer:
        return answer("big", 2000)

    got = await cache.get_or_build("big", (1,), build)
    assert got.body.startswith(b"big")
    assert len(cache) == 0
    assert cache.bytes == 0
    assert cache.stats.not_kept == 1


async def test_an_answer_is_only_served_for_the_versions_it_was_computed_under() -> None:
    cache = AnswerCache(max_bytes=10_000)
    calls: list[int] = []

    def builder(n: int) -> object:
        async def build() -> Answer:
            calls.append(n)
            return answer(f"v{n}")

        return build

    assert (await cache.get_or_build("k", (1, 7), builder(1))).body.startswith(b"v1")
    assert (await cache.get_or_build("k", (1, 7), builder(2))).body.startswith(b"v1")
    assert (await cache.get_or_build("k", (1, 8), builder(3))).body.startswith(b"v3")
    assert calls == [1, 3]
    assert len(cache) == 1  # the newer answer took the older one's place
    assert cache.get("k", (1, 7)) is None
    cache.put("k", (1, 7), answer("late"))  # an older computation that finished last
    assert cache.get("k", (1, 8)) is not None
    assert cache.get("k", (1, 7)) is None


async def test_concurrent_requests_for_one_answer_compute_it_once() -> None:
    cache = AnswerCache(max_bytes=10_000)
    calls = 0
    release = asyncio.Event()

    async def build() -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        return answer("once")

    waiting = [asyncio.create_task(cache.get_or_build("k", (1,), build)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    answers = await asyncio.gather(*waiting)
    assert calls == 1
    assert all(a is answers[0] for a in answers)


async def test_a_failed_computation_is_not_kept_and_reaches_every_waiter() -> None:
    cache = AnswerCache(max_bytes=10_000)
    release = asyncio.Event()

    async def fail() -> Answer:
        await release.wait()
        raise ConnectionError("database gone")

    first = asyncio.create_task(cache.get_or_build("k", (1,), fail))
    second = asyncio.create_task(cache.get_or_build("k", (1,), fail))
    await asyncio.sleep(0)
    release.set()
    for task in (first, second):
        with pytest.raises(ConnectionError):
            await task
    assert len(cache) == 0

    async def ok() -> Answer:
        return answer("back")

    assert (await cache.get_or_build("k", (1,), ok)).body.startswith(b"back")


async def test_gzip_is_counted_in_the_budget_and_the_etag_names_the_bytes() -> None:
    cache = AnswerCache(max_bytes=100_000)
    a = answer('{"x": 1}', 5000)
    cache.put("k", (1,), a)
    before = cache.bytes
    zipped = cache.gzipped("k", a)
    assert cache.bytes == before + len(zipped)
    assert a.etag != answer('{"x": 2}', 5000).etag
    assert a.etag == answer('{"x": 1}', 5000).etag
    assert a.gzip_etag != a.etag


# -- answers joined from kept chunks: hashed and compressed chunk by chunk

pieces_strategy = st.lists(
    st.one_of(
        st.binary(max_size=3000).map(Chunk),
        st.binary(max_size=200),
        st.text(max_size=2000).map(lambda t: Chunk(t.encode())),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(pieces=pieces_strategy)
def test_a_joined_answer_gzips_to_one_member_of_its_body(pieces: list[bytes | Chunk]) -> None:
    joined = Answer.joined(pieces, "application/json")
    body = b"".join(p.data if isinstance(p, Chunk) else p for p in pieces)
    assert joined.body == body
    zipped = AnswerCache(max_bytes=2**24).gzipped("k", joined)
    assert gzip.decompress(zipped) == body
    # one member, read to its end, as a client's zlib (httpx: wbits 16 + 15) reads it
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(zipped) == body
    assert reader.eof
    assert reader.unused_data == b""


@settings(max_examples=100, deadline=None)
@given(a=pieces_strategy, b=pieces_strategy)
def test_a_joined_answers_etag_names_its_bytes(
    a: list[bytes | Chunk], b: list[bytes | Chunk]
) -> None:
    first, second = Answer.joined(a, "text/plain"), Answer.joined(b, "text/plain")
    if first.body != second.body:
        assert first.etag != second.etag
    same = Answer.joined([Chunk(c.data) if isinstance(c, Chunk) else c for c in a], "text/plain")
    if all(isinstance(c, Chunk) for c in a):  # the same chunks again: the same tag
        assert same.etag == first.etag


def test_a_chunk_is_hashed_and_compressed_once() -> None:
    chunk = Chunk(b'{"month":"2026-03"}' * 500)
    assert chunk.deflated()[0] is chunk.deflated()[0]
    assert chunk.digest is chunk.digest
    first = Answer.joined([b"[", chunk, b"]"], "application/json")
    second = Answer.joined([b"[", chunk, b",", chunk, b"]"], "application/json")
    cache = AnswerCache(max_bytes=2**24)
    assert gzip.decompress(cache.gzipped("a", first)) == first.body
    assert gzip.decompress(cache.gzipped("b", second)) == second.body
    assert second.body == b"[" + chunk.data + b"," + chunk.data + b"]"
    assert first.etag != second.etag
