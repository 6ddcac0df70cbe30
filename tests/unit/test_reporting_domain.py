"""Reporting's rules: Tokyo calendar buckets, rounding of shares, refunds and voids."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.reporting import domain
from services.reporting.domain import BucketChange, CaptureState, ReversalExceedsCapture


def test_a_month_is_taken_in_tokyo_not_utc() -> None:
    late_october_utc = datetime(2026, 10, 31, 15, 30, tzinfo=UTC)  # 00:30 on 1 Nov in Tokyo
    assert domain.tokyo_month(late_october_utc) == date(2026, 11, 1)
    assert domain.tokyo_day(late_october_utc) == date(2026, 11, 1)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(domain.NaiveTimeError):
        domain.tokyo_day(datetime(2026, 10, 31, 15, 30))


def test_shares_round_half_even_to_four_decimals() -> None:
    assert domain.share(2, 3) == 0.6667
    assert domain.share(1, 8) == 0.125
    assert domain.share(66665, 100000) == 0.6666  # 0.66665: exactly half, to the even digit
    assert domain.share(66675, 100000) == 0.6668  # 0.66675: exactly half, to the even digit
    assert domain.share(66666, 100000) == 0.6667
    assert domain.share(0, 5) == 0.0
    assert domain.share(5, 5) == 1.0


def test_a_share_of_nothing_is_none_not_zero() -> None:
    assert domain.share(0, 0) is None


def test_a_part_larger_than_the_whole_is_refused() -> None:
    with pytest.raises(ValueError, match="not between 0 and 1"):
        domain.share(4, 3)


def test_months_parse_and_end() -> None:
    assert domain.parse_month("2026-12") == date(2026, 12, 1)
    assert domain.month_end(date(2026, 12, 1)) == date(2027, 1, 1)
    with pytest.raises(ValueError, match="YYYY-MM"):
        domain.parse_month("2026-13")


def test_a_partial_refund_reduces_the_amount_but_the_payment_still_counts() -> None:
    state, change = domain.refund(CaptureState(1000), 400)
    assert state == CaptureState(1000, refunded_yen=400)
    assert change == BucketChange(count=0, amount_yen=-400)


def test_a_full_refund_takes_the_payment_out_of_the_count() -> None:
    state, _ = domain.refund(CaptureState(1000), 400)
    state, change = domain.refund(state, 600)
    assert change == BucketChange(count=-1, amount_yen=-600)
    assert not state.counted


def test_refund_above_capture_is_refused() -> None:
    with pytest.raises(ReversalExceedsCapture):
        domain.refund(CaptureState(300, refunded_yen=100), 201)


def test_a_void_removes_what_still_stands_and_a_later_refund_changes_nothing() -> None:
    state, change = domain.void(CaptureState(1000, refunded_yen=300))
    assert change == BucketChange(count=-1, amount_yen=-700)
    again, nothing = domain.refund(state, 100)
    assert nothing == BucketChange(0, 0)
    assert again == state
    _, twice = domain.void(state)
    assert twice == BucketChange(0, 0)


def test_a_fiscal_quarter_ends_in_the_japanese_fiscal_year() -> None:
    assert domain.fiscal_quarter_last_month("2027-Q1") == date(2027, 6, 1)
    assert domain.fiscal_quarter_last_month("2027-Q3") == date(2027, 12, 1)
    assert domain.fiscal_quarter_last_month("2027-Q4") == date(2028, 3, 1)
    with pytest.raises(ValueError, match="YYYY-Qn"):
        domain.fiscal_quarter_last_month("2027-Q5")
