"""Turnaround percentiles over a histogram's bins (store._median_p90) interpolate as
PostgreSQL's percentile_cont does over the times themselves."""

from __future__ import annotations

import random
import statistics

from services.reporting.store import _median_p90


def percentile_cont(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = p * (len(ordered) - 1)
    lo, hi = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[lo] + (rank - lo) * (ordered[hi] - ordered[lo])


def test_one_time_per_bin_gives_percentile_cont_of_the_times() -> None:
    assert _median_p90([1, 1, 1, 1], [10.0, 20.0, 30.0, 40.0]) == (25.0, 37.0)
    assert _median_p90([1], [7.0]) == (7.0, 7.0)


def test_a_bin_of_several_times_counts_each_at_its_mean() -> None:
    # 5, 5, 5, 100: the median between ranks 1 and 2 (both 5), p90 between 5 and 100
    assert _median_p90([3, 1], [5.0, 100.0]) == (5.0, 5.0 + 0.7 * 95.0)


def test_random_distinct_times_match_percentile_cont() -> None:
    rng = random.Random(7)
    for _ in range(200):
        times = sorted(rng.sample(range(1, 10**6), rng.randint(1, 60)))
        median, p90 = _median_p90([1] * len(times), [float(t) for t in times])
        assert abs(median - statistics.median(times)) < 1e-6
        assert abs(p90 - percentile_cont([float(t) for t in times], 0.9)) < 1e-6
