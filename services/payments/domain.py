"""Payments' rules: fiscal years and receipt numbers, refunds and voids, ledger postings.

Pure: no I/O, no framework. The handlers load state, ask these functions what to do, and save.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from contracts.payments import (
    AttentionReason,
    PaymentChannel,
    PaymentMethod,
    SettlementDifference,
    SettlementLine,
    TerminalTransactionKind,
    TerminalTransactionVersion,
)

TOKYO = ZoneInfo("Asia/Tokyo")


# --- errors (mapped to HTTP and DLQ reasons in one place each: api.py, subscribers.py) -------


class PaymentError(Exception):
    """A request the payment rules refuse."""


class UnknownFacility(PaymentError):
    """No facility has this code."""


class UnknownTerminal(PaymentError):
    """No terminal has this id."""


class TerminalNotAtFacility(PaymentError):
    """A terminal published for a facility it is not registered to."""


class UnknownPayment(PaymentError):
    """The capture a refund or void names does not exist."""


class UnknownReceipt(PaymentError):
    """No receipt (領収書) has this number."""


class OriginalNotYetPosted(Exception):
    """A terminal's refund or void names a capture that is not posted (yet).

    Not a ``PaymentError``: terminals' messages can overtake each other (a refund published
    just after its capture may be fetched first), so the consumer retries it with back-off
    (1, 5, 15, 60 s) and dead-letters it with this reason only when the capture never comes;
    ``cityhall dlq replay`` re-drives it once the capture is in."""


class UnknownPaymentRequest(PaymentError):
    """No payment request has this reference or application."""


class ConfirmationConflict(PaymentError):
    """A provider notice id seen before arrives for another reference or amount: not a repeat
    of that notice, and the provider's ids must never be reused."""


class UnknownAttention(PaymentError):
    """No payment on the staff queue has this id."""


class AttentionAlreadyDecided(PaymentError):
    """Staff already decided what happens to this payment (refunded or attached)."""


class AttachNotAllowed(PaymentError):
    """The payment cannot settle its application's fee (already paid, or it keeps another
    amount than the fee)."""


class IdempotencyKeyReused(PaymentError):
    """The Idempotency-Key was used before for another action on this payment."""


class RefundExceedsCapture(PaymentError):
    """返金超過: a refund would take back more than was captured."""


class PaymentAlreadyVoided(PaymentError):
    """The capture was voided (取消); nothing more can be refunded or voided."""


class VoidNotAllowed(PaymentError):
    """A void must cancel the whole capture, before any refund."""


class MismatchedPayment(PaymentError):
    """A refund or void does not match its capture (another facility or method)."""


class TerminalTransactionConflict(PaymentError):
    """同一取引番号の内容違い: a terminal sent a transaction id posted before, with other
    content. The repeat is refused (dead-lettered with both versions) and finance is told; a
    terminal that reset its counter would otherwise lose the city's money silently."""

    def __init__(
        self,
        terminal_id: str,
        transaction_id: str,
        facility_code: str,
        posted: TerminalTransactionVersion,
        received: TerminalTransactionVersion,
    ) -> None:
        super().__init__(
            f"transaction id {transaction_id!r} of terminal {terminal_id!r} was posted as "
            f"[{posted.describe()}] and now arrives as [{received.describe()}]"
        )
        self.terminal_id = terminal_id
        self.transaction_id = transaction_id
        self.facility_code = facility_code
        self.posted = posted
        self.received = received


def same_terminal_transaction(
    posted: TerminalTransactionVersion, received: TerminalTransactionVersion
) -> bool:
    """Whether a repeat says what was posted (a harmless duplicate). Times compare as instants
    (the same moment written in UTC is the same). A capture's means and item are compared; a
    refund or void is compared by the capture it undoes (its means are the capture's).

    >>> from datetime import datetime
    >>> at = datetime.fromisoformat("2026-11-24T10:15:00+09:00")
    >>> v = TerminalTransactionVersion(kind="capture", method="qr", brand="PayPay",
    ...                                amount_yen=300, item="住民票の写し", occurred_at=at)
    >>> same_terminal_transaction(v, v.model_copy(update={"amount_yen": 450}))
    False
    """
    if (posted.kind, posted.amount_yen, posted.occurred_at) != (
        received.kind,
        received.amount_yen,
        received.occurred_at,
    ):
        return False
    if posted.kind is TerminalTransactionKind.CAPTURE:
        return (posted.method, posted.brand, posted.item) == (
            received.method,
            received.brand,
            received.item,
        )
    return posted.original_transaction_id == received.original_transaction_id


# --- fiscal year and receipt numbers -------------------------------------------------------


def fiscal_year(when: datetime) -> int:
    """The city's fiscal year (年度) of a moment: April to March, in Asia/Tokyo.

    >>> fiscal_year(datetime.fromisoformat("2027-03-31T23:59:00+09:00"))
    2026
    """
    if when.tzinfo is None:
        raise ValueError("fiscal_year needs a timezone-aware datetime")
    local = when.astimezone(TOKYO)
    return local.year if local.month >= 4 else local.year - 1


def business_date(when: datetime) -> date:
    """The day (Asia/Tokyo) a payment counts for in revenue and reconciliation."""
    if when.tzinfo is None:
        raise ValueError("business_date needs a timezone-aware datetime")
    return when.astimezone(TOKYO).date()


def receipt_number(facility_code: str, year: int, serial: int) -> str:
    """領収書番号: ``<facility>-<fiscal year>-<6-digit serial>``, e.g. ``shiminka-2026-000123``."""
    if serial <= 0:
        raise ValueError("receipt serials start at 1")
    return f"{facility_code}-{year}-{serial:06d}"


# --- payments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentState:
    """A capture as far as refunds and voids care."""

    payment_id: uuid.UUID
    facility_code: str
    method: PaymentMethod
    brand: str | None
    amount_yen: int
    refunded_yen: int
    voided: bool
    channel: PaymentChannel = PaymentChannel.TERMINAL

    @property
    def refundable_yen(self) -> int:
        return 0 if self.voided else self.amount_yen - self.refunded_yen


def decide_refund(payment: PaymentState, amount_yen: int) -> int:
    """The refunded total after refunding ``amount_yen``; raise when the rules refuse it."""
    if amount_yen <= 0:
        raise ValueError("a refund is a positive amount of yen")
    if payment.voided:
        raise PaymentAlreadyVoided(f"payment {payment.payment_id} was voided")
    if amount_yen > payment.refundable_yen:
        raise RefundExceedsCapture(
            f"refund of {amount_yen} yen exceeds what is left of the capture: "
            f"{payment.refundable_yen} of {payment.amount_yen} yen"
        )
    return payment.refunded_yen + amount_yen


def decide_void(payment: PaymentState, amount_yen: int) -> None:
    """Raise unless ``amount_yen`` voids the whole, untouched capture."""
    if payment.voided:
        raise PaymentAlreadyVoided(f"payment {payment.payment_id} was already voided")
    if payment.refunded_yen:
        raise VoidNotAllowed(f"payment {payment.payment_id} has refunds; refund the rest instead")
    if amount_yen != payment.amount_yen:
        raise VoidNotAllowed(
            f"a void cancels the whole capture ({payment.amount_yen} yen), not {amount_yen} yen"
        )


# --- the ledger ----------------------------------------------------------------------------


class PostingKind(StrEnum):
    CAPTURE = "capture"
    REFUND = "refund"
    VOID = "void"
    SETTLEMENT = "settlement"


REVENUE = "revenue"
"""収入: gross revenue of the facility (the posting carries the facility)."""
PROCESSOR_FEE = "processor_fee"
"""支払手数料: what the processor kept before remitting (繰替払い)."""
BANK = "bank"
"""指定金融機関: money remitted by the processor or deposited from the cash drawer."""


@functools.lru_cache(maxsize=1024)
def receivable_account(method: PaymentMethod, brand: str | None) -> str:
    """Where captured money waits: the cash drawer, or what a processor owes (未収金)."""
    if method is PaymentMethod.CASH:
        return "cash"
    label = re.sub(r"\s+", "_", (brand or "unknown").strip())
    return f"receivable:{method.value}:{label}"


@dataclass(frozen=True)
class Entry:
    account: str
    debit_yen: int = 0
    credit_yen: int = 0


@dataclass(frozen=True)
class Posting:
    """A balanced set of ledger entries (仕訳)."""

    posting_id: uuid.UUID
    kind: PostingKind
    facility_code: str
    business_date: date
    entries: tuple[Entry, ...]
    payment_id: uuid.UUID | None = None
    reverses: uuid.UUID | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        debits = credits = 0
        for e in self.entries:  # one loop, no generators: a posting is made per capture
            debit, credit = e.debit_yen, e.credit_yen
            if (debit > 0) == (credit > 0) or debit < 0 or credit < 0:
                raise ValueError(f"an entry is a debit or a credit, not both: {e}")
            debits += debit
            credits += credit
        if debits != credits or debits == 0:
            raise ValueError(f"unbalanced posting: debits {debits} <> credits {credits}")


def capture_posting(
    payment_id: uuid.UUID,
    facility_code: str,
    method: PaymentMethod,
    brand: str | None,
    amount_yen: int,
    occurred_at: datetime,
) -> Posting:
    """Dr receivable (or cash) / Cr revenue, gross."""
    return Posting(
        posting_id=uuid.uuid4(),
        kind=PostingKind.CAPTURE,
        facility_code=facility_code,
        business_date=business_date(occurred_at),
        entries=(
            Entry(receivable_account(method, brand), debit_yen=amount_yen),
            Entry(REVENUE, credit_yen=amount_yen),
        ),
        payment_id=payment_id,
    )


def refund_posting(payment: PaymentState, amount_yen: int, occurred_at: datetime) -> Posting:
    """Dr revenue / Cr receivable: revenue given back."""
    return Posting(
        posting_id=uuid.uuid4(),
        kind=PostingKind.REFUND,
        facility_code=payment.facility_code,
        business_date=business_date(occurred_at),
        entries=(
            Entry(REVENUE, debit_yen=amount_yen),
            Entry(receivable_account(payment.method, payment.brand), credit_yen=amount_yen),
        ),
        payment_id=payment.payment_id,
    )


def reversal_of(original: Posting, kind: PostingKind, occurred_at: datetime) -> Posting:
    """The entries of ``original`` with debits and credits swapped (a correction, 訂正)."""
    return Posting(
        posting_id=uuid.uuid4(),
        kind=kind,
        facility_code=original.facility_code,
        business_date=business_date(occurred_at),
        entries=tuple(Entry(e.account, e.credit_yen, e.debit_yen) for e in original.entries),
        payment_id=original.payment_id,
        reverses=original.posting_id,
    )


# --- online payment requests ---------------------------------------------------------------

_BASE32 = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def payment_reference(request_id: uuid.UUID) -> str:
    """The reference a citizen and the provider quote: ``PR-`` and 10 unambiguous characters."""
    n = request_id.int
    chars = []
    for _ in range(10):
        n, r = divmod(n, len(_BASE32))
        chars.append(_BASE32[r])
    return "PR-" + "".join(chars)


@dataclass(frozen=True)
class PaymentRequestState:
    request_id: uuid.UUID
    application_id: uuid.UUID
    reference: str
    facility_code: str
    fee_item: str
    amount_yen: int
    status: str
    expires_at: datetime


def decide_confirmation(
    request: PaymentRequestState, amount_yen: int, now: datetime
) -> tuple[AttentionReason, ...]:
    """Why a confirmed payment cannot settle its request; empty when it settles it.

    Never a refusal: the provider has taken the money, so it is captured either way, and the
    reasons put it on the staff queue. Expiry is judged by ``now``, when the confirmation
    arrives, not by the provider's ``paid_at`` (its clock is not ours, and a request that
    expired was announced as expired).

    >>> from datetime import timedelta
    >>> at = datetime.fromisoformat("2026-11-24T09:30:00+09:00")
    >>> request = PaymentRequestState(uuid.uuid4(), uuid.uuid4(), "PR-X", "shiminka",
    ...                               "住民票の写し", 300, "pending", expires_at=at)
    >>> decide_confirmation(request, 300, at - timedelta(seconds=1))
    ()
    >>> [r.value for r in decide_confirmation(request, 450, at)]
    ['paid_after_expiry', 'other_amount']
    """
    reasons = []
    if request.status == "paid":
        reasons.append(AttentionReason.PAID_TWICE)
    elif request.status == "expired" or now >= request.expires_at:
        reasons.append(AttentionReason.PAID_AFTER_EXPIRY)
    if amount_yen != request.amount_yen:
        reasons.append(AttentionReason.OTHER_AMOUNT)
    return tuple(reasons)


def next_check_after_s(checks: int, backoff_s: float, backoff_max_s: float) -> float:
    """How long the sweep waits before asking the provider about a request again, after its
    ``checks``-th question: ``backoff_s``, doubled each time, at most ``backoff_max_s``.

    >>> [next_check_after_s(n, 60, 600) for n in (1, 2, 3, 4, 5)]
    [60.0, 120.0, 240.0, 480.0, 600]
    """
    if checks < 1:
        raise ValueError("the back-off follows a question")
    return min(backoff_s * float(2 ** min(checks - 1, 32)), backoff_max_s)


@dataclass(frozen=True)
class AttentionState:
    """A payment on the staff queue (要確認入金) and whether it was decided."""

    payment_id: uuid.UUID
    request_id: uuid.UUID
    reasons: tuple[AttentionReason, ...]
    decided: bool


def decide_attention_refund(item: AttentionState, payment: PaymentState, amount_yen: int) -> bool:
    """Refund part or all of a payment on the queue; True when nothing is left of it (the
    item is then decided: refunded)."""
    if item.decided:
        raise AttentionAlreadyDecided(f"payment {item.payment_id} was decided already")
    return decide_refund(payment, amount_yen) == payment.amount_yen


def decide_attach(
    item: AttentionState, payment: PaymentState, request: PaymentRequestState
) -> None:
    """Raise unless the payment can settle its request's fee: the request is not paid by
    another payment, and what the payment keeps is exactly the fee (refund an excess first;
    a payment short of the fee is refunded, not attached)."""
    if item.decided:
        raise AttentionAlreadyDecided(f"payment {item.payment_id} was decided already")
    if request.status == "paid":
        raise AttachNotAllowed(
            f"payment request {request.reference} is paid already: refund this payment"
        )
    if payment.voided:
        raise PaymentAlreadyVoided(f"payment {payment.payment_id} was voided")
    kept = payment.amount_yen - payment.refunded_yen
    if kept > request.amount_yen:
        raise AttachNotAllowed(
            f"the payment keeps {kept} yen but the fee is {request.amount_yen} yen: "
            f"refund the {kept - request.amount_yen} yen over it first"
        )
    if kept < request.amount_yen:
        raise AttachNotAllowed(
            f"the payment keeps {kept} yen, less than the fee of {request.amount_yen} yen: "
            "refund it"
        )


# --- daily reconciliation (調定) ------------------------------------------------------------


@dataclass(frozen=True)
class LedgerDay:
    """What the ledger holds for one method and brand on a facility's day."""

    count: int
    amount_yen: int


def reconcile(
    lines: list[SettlementLine], ledger: dict[str, LedgerDay]
) -> list[SettlementDifference]:
    """The lines of a settlement batch that disagree with the ledger (keyed by account).

    Only the methods and brands in the batch are compared: each processor settles its own.
    """
    differences = []
    for line in lines:
        book = ledger.get(receivable_account(line.method, line.brand), LedgerDay(0, 0))
        if (book.count, book.amount_yen) != (line.count, line.amount_yen):
            differences.append(
                SettlementDifference(
                    method=line.method,
                    brand=line.brand,
                    ledger_count=book.count,
                    reported_count=line.count,
                    ledger_amount_yen=book.amount_yen,
                    reported_amount_yen=line.amount_yen,
                    count_difference=line.count - book.count,
                    amount_difference_yen=line.amount_yen - book.amount_yen,
                )
            )
    return differences


def settlement_posting(
    facility_code: str, day: date, lines: list[SettlementLine]
) -> Posting | None:
    """The processor's fee and the remittance clear what it owed (繰替払い): Dr fee, Dr bank /
    Cr receivable. Revenue is untouched: it stays gross. None when nothing moves."""
    entries: list[Entry] = []
    for line in lines:
        account = receivable_account(line.method, line.brand)
        if line.fee_yen:
            entries.append(Entry(PROCESSOR_FEE, debit_yen=line.fee_yen))
        if line.amount_yen - line.fee_yen:
            entries.append(Entry(BANK, debit_yen=line.amount_yen - line.fee_yen))
        if line.amount_yen:
            entries.append(Entry(account, credit_yen=line.amount_yen))
    if not entries:
        return None
    return Posting(
        posting_id=uuid.uuid4(),
        kind=PostingKind.SETTLEMENT,
        facility_code=facility_code,
        business_date=day,
        entries=tuple(entries),
    )
