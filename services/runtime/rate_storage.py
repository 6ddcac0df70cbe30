"""In-process rate-limit counts whose upkeep does not grow with the number of callers.

``limits``' own ``async+memory://`` storage expires counters by walking every key it holds,
and starts a new walk as soon as the last one ended, from the next request on, so its cost
per request grows with the number of callers (docs/benchmarks.md). This storage
keeps the sliding-window counts per window instead: one ``Counter`` per (window length,
window number). A request reads its caller's count in the current and the previous window;
the first request of a new window drops the windows before the previous one whole. The
upkeep is then a few dictionary operations per request, whatever the number of callers.

It is a ``limits`` storage (the library's documented extension point: a ``Storage`` subclass
registers its ``STORAGE_SCHEME``), so ``limits``' strategies, parsing and window statistics
are used unchanged, with the same counting as ``SlidingWindowCounterRateLimiter`` on its own
storages: the previous window's count weighted by the part of it still inside the sliding
window, plus the current window's. Chosen with ``<SERVICE>_RATE_LIMIT_STORAGE``
(``async+windowed-memory://``, the default); counts are per process, as with
``async+memory://``.
"""

from __future__ import annotations

import time
from collections import Counter
from math import floor

from limits.aio.storage import SlidingWindowCounterSupport, Storage

SCHEME = "async+windowed-memory"


class WindowedMemoryStorage(Storage, SlidingWindowCounterSupport):
    """Sliding-window-counter counts per window, dropped a window at a time (see module)."""

    STORAGE_SCHEME = [SCHEME]  # noqa: RUF012  (limits declares it a plain list[str])

    def __init__(
        self, uri: str | None = None, wrap_exceptions: bool = False, **options: float | str | bool
    ) -> None:
        # (window length s, window number) -> counts by key; at most two per window length
        self._windows: dict[tuple[int, int], Counter[str]] = {}
        # fixed windows (limits' FixedWindowRateLimiter): key -> (count, expires at)
        self._fixed: dict[str, tuple[int, float]] = {}
        self._fixed_swept_at_size = 1024
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    # -- sliding window counter (what cityhall uses) ---------------------------------------

    def _counts(self, expiry: int, number: int) -> Counter[str]:
        counts = self._windows.get((expiry, number))
        if counts is None:
            # A new window: the ones before the previous one are never read again.
            for old in [k for k in self._windows if k[0] == expiry and k[1] < number - 1]:
                del self._windows[old]
            counts = self._windows[(expiry, number)] = Counter()
        return counts

    def _window(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float]:
        """(previous count, its weight in seconds, current count, current window's ttl): what
        ``limits``' storages answer for ``get_sliding_window``."""
        number = int(now / expiry)
        left = (1 - ((now / expiry) % 1)) * expiry  # seconds left in the current window
        previous = self._windows.get((expiry, number - 1))
        previous_count = previous.get(key, 0) if previous is not None else 0
        current = self._windows.get((expiry, number))
        current_count = current.get(key, 0) if current is not None else 0
        return previous_count, (left if previous_count else 0.0), current_count, left + expiry

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        if amount > limit:
            return False
        now = time.time()
        previous_count, weight, current_count, _ = self._window(key, expiry, now)
        if floor(previous_count * weight / expiry + current_count) + amount > limit:
            return False
        # No await between the read and this write: no other request can come between them.
        self._counts(expiry, int(now / expiry))[key] += amount
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._window(key, expiry, time.time())

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        number = int(time.time() / expiry)
        for n in (number - 1, number):
            counts = self._windows.get((expiry, n))
            if counts is not None:
                counts.pop(key, None)

    # -- fixed window (the rest of limits' Storage interface) ------------------------------

    def _fixed_count(self, key: str, now: float) -> tuple[int, float]:
        count, expires_at = self._fixed.get(key, (0, 0.0))
        return (count, expires_at) if expires_at > now else (0, 0.0)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        count, expires_at = self._fixed_count(key, now)
        count += amount
        self._fixed[key] = (count, expires_at or now + expiry)
        if len(self._fixed) >= 2 * self._fixed_swept_at_size:
            # Expired keys go when the table has doubled since the last sweep: amortised
            # constant work per request.
            self._fixed = {k: v for k, v in self._fixed.items() if v[1] > now}
            self._fixed_swept_at_size = max(1024, len(self._fixed))
        return count

    async def get(self, key: str) -> int:
        return self._fixed_count(key, time.time())[0]

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        return self._fixed_count(key, now)[1] or now

    async def clear(self, key: str) -> None:
        self._fixed.pop(key, None)

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        cleared = len(self._fixed) + sum(len(c) for c in self._windows.values())
        self._fixed.clear()
        self._windows.clear()
        return cleared
