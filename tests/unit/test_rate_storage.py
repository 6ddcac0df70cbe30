"""The windowed rate-limit storage counts like limits' own memory storage, at constant upkeep."""

from __future__ import annotations

import random
from typing import Any

import limits
import limits.aio.strategies
import pytest
from limits.aio.storage import MemoryStorage
from limits.storage import storage_from_string

from services.runtime import rate_storage
from services.runtime.http_limits import HttpLimitSettings, RateLimited, RateLimits
from services.runtime.rate_storage import WindowedMemoryStorage


class Clock:
    """Stands in for time.time() in both storages and in limits' strategies."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_790_000_000.25)
    for module in ("services.runtime.rate_storage", "limits.aio.storage.memory"):
        monkeypatch.setattr(f"{module}.time.time", fake)
    return fake


def test_the_scheme_is_registered_and_is_the_default() -> None:
    assert isinstance(storage_from_string("async+windowed-memory://"), WindowedMemoryStorage)
    assert HttpLimitSettings().rate_limit_storage == f"{rate_storage.SCHEME}://"


async def test_it_decides_every_hit_as_limits_own_memory_storage_does(clock: Clock) -> None:
    # Random callers, limits and gaps over several windows: the same yes/no for every hit.
    rng = random.Random(7)
    ours = limits.aio.strategies.SlidingWindowCounterRateLimiter(WindowedMemoryStorage())
    theirs = limits.aio.strategies.SlidingWindowCounterRateLimiter(MemoryStorage())
    items = limits.parse_many("5/second;30/minute")
    refused = 0
    for _ in range(3_000):
        clock.now += rng.choice((0.0, 0.0, 0.01, 0.05, 0.3, 2.0))
        who = f"caller-{rng.randrange(4)}"
        for item in items:
            mine, reference = await ours.hit(item, who), await theirs.hit(item, who)
            assert mine == reference, (clock.now, who, str(item))
            refused += not mine
            a = await ours.get_window_stats(item, who)
            b = await theirs.get_window_stats(item, who)
            assert (a.remaining, round(a.reset_time, 6)) == (b.remaining, round(b.reset_time, 6))
    assert refused > 100  # the limits were reached, often


async def test_old_windows_go_whole_and_the_upkeep_does_not_grow_with_callers(
    clock: Clock,
) -> None:
    storage = WindowedMemoryStorage()
    limiter = limits.aio.strategies.SlidingWindowCounterRateLimiter(storage)
    per_second = limits.parse("20/second")
    for i in range(5_000):
        assert await limiter.hit(per_second, f"applicant-{i}")
    assert sum(len(c) for c in storage._windows.values()) == 5_000
    clock.now += 1.0
    assert await limiter.hit(per_second, "applicant-0")  # next window: the old one is kept
    assert len(storage._windows) == 2
    clock.now += 1.0
    assert await limiter.hit(per_second, "applicant-0")
    assert len(storage._windows) == 2  # the first window went, 5,000 counts at once
    assert sum(len(c) for c in storage._windows.values()) == 2


async def test_a_caller_past_its_rate_is_refused_with_a_retry_after(clock: Clock) -> None:
    rates = RateLimits(HttpLimitSettings(rate_limit_applicant="3/second"), "applications")
    for _ in range(3):
        await rates.hit("applicant", "a-1")
    with pytest.raises(RateLimited) as refused:
        await rates.hit("applicant", "a-1")
    assert refused.value.retry_after_s == 1
    await rates.hit("applicant", "a-2")  # another caller is counted on its own
    clock.now += 2.0
    await rates.hit("applicant", "a-1")  # two windows on: served again


async def test_fixed_windows_count_expire_and_sweep(clock: Clock) -> None:
    storage: Any = WindowedMemoryStorage()
    limiter = limits.aio.strategies.FixedWindowRateLimiter(storage)
    item = limits.parse("2/minute")
    assert [await limiter.hit(item, "x") for _ in range(3)] == [True, True, False]
    assert await storage.get_expiry(item.key_for("x")) == pytest.approx(clock.now + 60)
    clock.now += 61
    assert await limiter.hit(item, "x")
    for i in range(3_000):
        await storage.incr(f"old-{i}", 1)
    clock.now += 2  # the 3,000 have expired; they go when the table has doubled again
    for i in range(5_000):
        await storage.incr(f"new-{i}", 1)
    await storage.incr("late", 1)
    assert not any(key.startswith("old-") for key in storage._fixed)
    assert await storage.get("new-0") == 1
    assert await storage.get("late") == 1
    assert await storage.reset() >= 1
    assert await storage.get("late") == 0
