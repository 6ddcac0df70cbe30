"""Reporting's rules: how events fall into KPI buckets and how shares are computed. No I/O.

Calendar buckets are Japanese: a month or day is taken in Asia/Tokyo (an application submitted
at 2026-01-31T23:30+00:00 belongs to February 2026), while times are stored in UTC.

Shares (online usage rate, cashless share) are ``part / whole`` rounded **half-even to 4
decimals** (0.66665 -> 0.6666, 2/3 -> 0.6667); ``None`` when ``whole`` is 0 (no data is not 0%).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

TOKYO = ZoneInfo("Asia/Tokyo")
SHARE_DECIMALS = 4
SHARE_ROUNDING = (
    "part / whole, rounded half-even to 4 decimals (0.66665 -> 0.6666); null when whole is 0"
)
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
_MONTH = re.compile(MONTH_PATTERN)


class NaiveTimeError(ValueError):
    """A time without a UTC offset cannot be placed in a Tokyo month or day."""


def tokyo_day(at: datetime) -> date:
    """The calendar day (日) in Asia/Tokyo on which ``at`` falls."""
    if at.tzinfo is None:
        raise NaiveTimeError(f"time {at.isoformat()} has no UTC offset")
    return at.astimezone(TOKYO).date()


def tokyo_month(at: datetime) -> date:
    """The first day of the month (月) in Asia/Tokyo in which ``at`` falls."""
    return tokyo_day(at).replace(day=1)


def parse_month(value: str) -> date:
    """``YYYY-MM`` as the first day of that month."""
    if not _MONTH.match(value):
        raise ValueError(f"month must be YYYY-MM, got {value!r}")
    return date(int(value[:4]), int(value[5:7]), 1)


def month_end(first: date) -> date:
    """The first day of the month after ``first`` (an exclusive upper bound)."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


QUARTER_PATTERN = r"^\d{4}-Q[1-4]$"


def fiscal_quarter_last_month(quarter: str) -> date:
    """The last month of a fiscal quarter (年度は4月始まり): ``2027-Q1`` is April-June 2027,
    so June 2027; ``2027-Q4`` is January-March 2028, so March 2028."""
    if not re.match(QUARTER_PATTERN, quarter):
        raise ValueError(f"quarter must be YYYY-Qn, got {quarter!r}")
    fiscal_year, q = int(quarter[:4]), int(quarter[-1])
    month = 3 + 3 * q  # Q1 -> 6, Q2 -> 9, Q3 -> 12, Q4 -> 15 (March of the next year)
    return date(fiscal_year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


@functools.lru_cache(maxsize=65536)
def share(part: int, whole: int) -> float | None:
    """``part / whole`` rounded half-even to 4 decimals, or None when ``whole`` is 0.

    Remembered: a year's answer computes tens of thousands of shares of a few hundred
    distinct pairs, and a look-up is cheaper than the rounding."""
    if whole == 0:
        return None
    if part < 0 or part > whole:
        raise ValueError(f"share of {part} in {whole} is not between 0 and 1")
    # In integers (exact, and a KPI response computes thousands of shares): the quotient in
    # 1/10,000ths, rounded half to even on the remainder.
    scale: int = 10**SHARE_DECIMALS
    quotient, remainder = divmod(part * scale, whole)
    if 2 * remainder > whole or (2 * remainder == whole and quotient % 2):
        quotient += 1
    return quotient / scale


@dataclass(frozen=True)
class BucketChange:
    """What a payment event changes in its daily bucket: payments counted and yen."""

    count: int
    amount_yen: int


@dataclass(frozen=True)
class CaptureState:
    """What reporting keeps of one capture (決済): its amount and what was reversed since."""

    amount_yen: int
    refunded_yen: int = 0
    voided: bool = False

    @property
    def counted(self) -> bool:
        """A payment counts while some of it stands: not voided, not refunded in full."""
        return not self.voided and self.refunded_yen < self.amount_yen

    @property
    def standing_yen(self) -> int:
        return 0 if self.voided else self.amount_yen - self.refunded_yen


class ReversalExceedsCapture(ValueError):
    """A refund larger than what is left of the capture (返金額が決済額を超える)."""


def refund(state: CaptureState, amount_yen: int) -> tuple[CaptureState, BucketChange]:
    """Reverse ``amount_yen`` of a capture: the bucket loses that amount, and the payment
    itself once nothing of it stands (a full refund is no payment)."""
    if amount_yen <= 0:
        raise ValueError("a refund is a positive amount of yen")
    if state.voided:
        return state, BucketChange(0, 0)
    if amount_yen > state.standing_yen:
        raise ReversalExceedsCapture(
            f"refund of {amount_yen} yen exceeds the {state.standing_yen} yen left of the capture"
        )
    after = CaptureState(state.amount_yen, state.refunded_yen + amount_yen, state.voided)
    return after, _change(state, after)


def void(state: CaptureState) -> tuple[CaptureState, BucketChange]:
    """Cancel a capture (取消): it no longer counts, and none of its yen stands."""
    after = CaptureState(state.amount_yen, state.refunded_yen, voided=True)
    return after, _change(state, after)


def _change(before: CaptureState, after: CaptureState) -> BucketChange:
    return BucketChange(
        count=int(after.counted) - int(before.counted),
        amount_yen=after.standing_yen - before.standing_yen,
    )
