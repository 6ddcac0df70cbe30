"""Payments' rules: fiscal years and receipt numbers, refunds and voids, a terminal's repeats,
online payment requests and the staff queue. The ledger's rules are in ``ledger``, the
refusals in ``errors``.

Pure: no I/O, no framework. The handlers load state, ask these functions what to do, and save.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from contracts.payments import (
    AttentionReason,
    PaymentChannel,
    PaymentMethod,
    TerminalTransactionKind,
    TerminalTransactionVersion,
)
from services.payments.errors import (
    AttachNotAllowed,
    AttentionAlreadyDecided,
    PaymentAlreadyVoided,
    RefundExceedsCapture,
    VoidNotAllowed,
)

TOKYO = ZoneInfo("Asia/Tokyo")


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
