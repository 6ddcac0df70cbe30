"""What the payment rules refuse: one exception per refusal, all ``PaymentError`` but one.

Each maps to an HTTP status in one place (``api/deps.py``) and to a dead letter's reason in
another (``subscribers.py``); ``OriginalNotYetPosted`` is retried instead.
"""

from __future__ import annotations

from contracts.payments import TerminalTransactionVersion


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
