"""The answer cache (services/reporting/answers.py) alone: byte budget, versions, coalescing,
validators."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from services.reporting.answers import OVERHEAD_BYTES, Answer, AnswerCache, respond


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


def test_the_etag_names_the_bytes_weakly() -> None:
    a = answer('{"x": 1}', 5000)
    assert a.etag != answer('{"x": 2}', 5000).etag
    assert a.etag == answer('{"x": 1}', 5000).etag
    assert a.etag.startswith('W/"')
    assert a.etag.endswith('"')


@pytest.mark.parametrize(
    ("header", "names"),
    [
        ("{tag}", True),
        ('"{bare}"', True),  # the strong form of the same tag: weak comparison
        ('"other", {tag}', True),
        ("*", True),
        ('"other"', False),
        ("", False),
    ],
)
def test_if_none_match_is_compared_weakly(header: str, names: bool) -> None:
    a = answer("figures")
    bare = a.etag.removeprefix('W/"').removesuffix('"')
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/kpi",
            "headers": [(b"if-none-match", header.format(tag=a.etag, bare=bare).encode())],
        }
    )
    response = respond(request, a)
    assert (response.status_code == 304) is names
    assert response.headers["etag"] == a.etag
    assert response.headers["cache-control"] == "no-cache"
    assert response.body == (b"" if names else a.body)
