"""Events and commands of the payments service (決済): captures, refunds, receipts, settlements."""

from __future__ import annotations

import re
import uuid
from datetime import date
from enum import StrEnum
from typing import Any, ClassVar, Self
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contracts.envelope import TYPE_PREFIX, Event

FACILITY_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,39}$"
_TOKYO = ZoneInfo("Asia/Tokyo")


class PaymentMethod(StrEnum):
    """How a payment was made: QR code, e-money, credit card, or cash (recorded too)."""

    QR = "qr"
    EMONEY = "emoney"
    CREDIT = "credit"
    CASH = "cash"

    @property
    def cashless(self) -> bool:
        return self is not PaymentMethod.CASH


class PaymentChannel(StrEnum):
    """Where the payment was taken: at a facility's terminal or online (application fees)."""

    TERMINAL = "terminal"
    ONLINE = "online"


class PaymentCapturedV1(Event):
    """Money was taken (a capture), at a facility's terminal or online for an application fee.

    Revenue is recorded gross: a 300-yen fee is 300 yen of revenue even when the processor keeps
    its fee (繰替払い); fees appear in settlements. Card data never travels here.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.PaymentCaptured.v1"
    subject: ClassVar[str] = "payments.payment.captured.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentCaptured.v1",
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                    "facility_code": "shiminka",
                    "terminal_id": "shiminka-t01",
                    "channel": "terminal",
                    "method": "qr",
                    "brand": "PayPay",
                    "amount_yen": 300,
                    "item": "住民票の写し",
                    "occurred_at": "2026-11-24T10:15:00+09:00",
                    "receipt_number": "shiminka-2026-000123",
                    "application_id": None,
                }
            ]
        },
    )

    payment_id: uuid.UUID
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    terminal_id: str | None = Field(default=None, max_length=64)
    channel: PaymentChannel
    method: PaymentMethod
    brand: str | None = Field(
        default=None, max_length=40, description="PayPay, 交通系IC, Visa, ...; none for cash."
    )
    amount_yen: int = Field(gt=0)
    item: str = Field(min_length=1, max_length=100, description="Item or fee type.")
    occurred_at: AwareDatetime
    receipt_number: str = Field(max_length=64)
    application_id: uuid.UUID | None = Field(
        default=None,
        description="Set when the payment settles an application's fee. An online payment that "
        "needs attention (late, twice, another amount) has none: PaymentNeedsAttention names its "
        "application, and PaymentAttached follows if staff attach it.",
    )

    def aggregate_id(self) -> str:
        return str(self.payment_id)


class PaymentRefundedV1(Event):
    """Money was given back (返金) on a capture, in part or in full.

    ``refunded_total_yen`` is what has been refunded on the payment so far, this refund
    included; it never exceeds the captured amount.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.PaymentRefunded.v1"
    subject: ClassVar[str] = "payments.payment.refunded.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentRefunded.v1",
        json_schema_extra={
            "examples": [
                {
                    "refund_id": "2f1d0c9e-6b5a-4d3c-8e2f-1a0b9c8d7e6f",
                    "payment_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                    "facility_code": "shiminka",
                    "terminal_id": "shiminka-t01",
                    "channel": "terminal",
                    "method": "qr",
                    "brand": "PayPay",
                    "amount_yen": 300,
                    "refunded_total_yen": 300,
                    "occurred_at": "2026-11-24T11:00:00+09:00",
                }
            ]
        },
    )

    refund_id: uuid.UUID
    payment_id: uuid.UUID
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    terminal_id: str | None = Field(default=None, max_length=64)
    channel: PaymentChannel
    method: PaymentMethod
    brand: str | None = Field(default=None, max_length=40)
    amount_yen: int = Field(gt=0, description="This refund, in integer yen.")
    refunded_total_yen: int = Field(gt=0, description="Refunded on the payment so far.")
    occurred_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.payment_id)


class PaymentVoidedV1(Event):
    """A capture was cancelled (取消) before settlement: as if it never happened.

    The ledger keeps the capture and adds its reversing entries; the receipt stays issued and
    is shown as voided.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.PaymentVoided.v1"
    subject: ClassVar[str] = "payments.payment.voided.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentVoided.v1",
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                    "facility_code": "shiminka",
                    "terminal_id": "shiminka-t01",
                    "method": "qr",
                    "brand": "PayPay",
                    "amount_yen": 300,
                    "occurred_at": "2026-11-24T10:16:00+09:00",
                }
            ]
        },
    )

    payment_id: uuid.UUID
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    terminal_id: str | None = Field(default=None, max_length=64)
    method: PaymentMethod
    brand: str | None = Field(default=None, max_length=40)
    amount_yen: int = Field(gt=0, description="The voided capture's amount.")
    occurred_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.payment_id)


class PaymentRequestExpiredV1(Event):
    """An application fee's payment request ran out before it was paid (期限切れ).

    The request is cancelled. Money the provider confirms later is still captured, but settles
    nothing by itself: it is announced as PaymentNeedsAttention and waits for staff.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.PaymentRequestExpired.v1"
    subject: ClassVar[str] = "payments.payment_request.expired.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentRequestExpired.v1",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "a3bb189e-8bf9-3888-9912-ace4e6543002",
                    "application_id": "0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10",
                    "reference": "PR-7KQ2M9XW4T",
                    "amount_yen": 300,
                    "expired_at": "2026-11-24T09:30:05+09:00",
                }
            ]
        },
    )

    request_id: uuid.UUID
    application_id: uuid.UUID
    reference: str = Field(max_length=40)
    amount_yen: int = Field(gt=0)
    expired_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.application_id)


class AttentionReason(StrEnum):
    """Why money the provider took does not simply settle its payment request."""

    PAID_AFTER_EXPIRY = "paid_after_expiry"
    """The confirmation arrived at or after the request's expiry (期限後入金), judged by its
    arrival, not by the provider's ``paid_at``."""
    PAID_TWICE = "paid_twice"
    """The request was already paid (二重払い)."""
    OTHER_AMOUNT = "other_amount"
    """Another amount than the one requested (過不足)."""


class ConfirmationSource(StrEnum):
    """How payments learnt of an online payment."""

    WEBHOOK = "webhook"
    """The provider's signed notice."""
    SWEEP = "sweep"
    """Payments asked the provider about a request whose notice never came."""


class PaymentNeedsAttentionV1(Event):
    """Money the provider took that settles nothing by itself: paid after the request expired,
    paid twice, or another amount (要確認入金). It is captured all the same (receipt, ledger,
    PaymentCaptured without ``application_id``: the money is the city's until it is returned)
    and waits on the staff queue (``GET /payments/attention``) until staff refund it or attach
    it to its application.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.PaymentNeedsAttention.v1"
    subject: ClassVar[str] = "payments.payment.needs_attention.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentNeedsAttention.v1",
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "5b0f3c1e-2d4a-5e6f-8a9b-0c1d2e3f4a5b",
                    "request_id": "a3bb189e-8bf9-3888-9912-ace4e6543002",
                    "application_id": "0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10",
                    "reference": "PR-7KQ2M9XW4T",
                    "facility_code": "shiminka",
                    "reasons": ["paid_after_expiry"],
                    "amount_yen": 300,
                    "requested_yen": 300,
                    "paid_at": "2026-11-24T09:29:58+09:00",
                    "expires_at": "2026-11-24T09:30:00+09:00",
                    "received_at": "2026-11-24T09:30:04+09:00",
                    "learnt_by": "webhook",
                    "receipt_number": "shiminka-2026-000124",
                }
            ]
        },
    )

    payment_id: uuid.UUID
    request_id: uuid.UUID
    application_id: uuid.UUID = Field(description="The application the money was paid for.")
    reference: str = Field(max_length=40)
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    reasons: list[AttentionReason] = Field(min_length=1)
    amount_yen: int = Field(gt=0, description="What the provider took.")
    requested_yen: int = Field(gt=0, description="What the request asked for.")
    paid_at: AwareDatetime = Field(description="When the provider says it was paid.")
    expires_at: AwareDatetime
    received_at: AwareDatetime = Field(description="When payments learnt of it.")
    learnt_by: ConfirmationSource
    receipt_number: str = Field(max_length=64)

    def aggregate_id(self) -> str:
        return str(self.payment_id)


class PaymentAttachedV1(Event):
    """Staff attached a payment that needed attention to its application (充当): it now
    settles the application's fee, as a PaymentCaptured with ``application_id`` would have.
    What it keeps (captured minus refunded) is exactly the fee requested."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.PaymentAttached.v1"
    subject: ClassVar[str] = "payments.payment.attached.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PaymentAttached.v1",
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "5b0f3c1e-2d4a-5e6f-8a9b-0c1d2e3f4a5b",
                    "request_id": "a3bb189e-8bf9-3888-9912-ace4e6543002",
                    "application_id": "0b4f8a52-2f0e-4f7e-9d0a-1c7f3f5d9a10",
                    "reference": "PR-7KQ2M9XW4T",
                    "amount_yen": 300,
                    "attached_at": "2026-11-24T13:10:00+09:00",
                }
            ]
        },
    )

    payment_id: uuid.UUID
    request_id: uuid.UUID
    application_id: uuid.UUID
    reference: str = Field(max_length=40)
    amount_yen: int = Field(gt=0, description="What the payment keeps: the fee requested.")
    attached_at: AwareDatetime

    def aggregate_id(self) -> str:
        return str(self.application_id)


# --- daily settlement and reconciliation (調定) ---------------------------------------------


class SettlementLine(BaseModel):
    """One method and brand in a settlement batch: how many payments, how much, the fee."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: PaymentMethod
    brand: str | None = Field(default=None, max_length=40, description="None for cash.")
    count: int = Field(ge=0, description="Payments (captures, net of voids).")
    amount_yen: int = Field(ge=0, description="Net of refunds, in integer yen.")
    fee_yen: int = Field(default=0, ge=0, description="The processor's fee (繰替払い).")


class SettlementBatch(BaseModel):
    """Command: a day's settlement batch for one facility, from its terminals or the processor.

    POSTed to ``/settlements``. Payments compares each line with the ledger and answers (and
    publishes) SettlementReconciled or SettlementMismatch. The fee is what the processor keeps
    before remitting (繰替払い): revenue stays gross, the fee is recorded apart.
    """

    model_config = ConfigDict(
        extra="forbid",
        title="SettlementBatch",
        json_schema_extra={
            "examples": [
                {
                    "batch_id": "shiminka-20261124-paypay",
                    "facility_code": "shiminka",
                    "business_date": "2026-11-24",
                    "processor": "指定納付受託者",
                    "lines": [
                        {
                            "method": "qr",
                            "brand": "PayPay",
                            "count": 12,
                            "amount_yen": 3600,
                            "fee_yen": 108,
                        }
                    ],
                }
            ]
        },
    )

    batch_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    business_date: date = Field(description="The day (Asia/Tokyo) the batch covers.")
    processor: str = Field(min_length=1, max_length=100)
    lines: list[SettlementLine] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_line_per_brand(self) -> Self:
        keys = [(line.method, line.brand) for line in self.lines]
        if len(set(keys)) != len(keys):
            raise ValueError("lines: one line per method and brand")
        for line in self.lines:
            if line.method is PaymentMethod.CASH and line.fee_yen:
                raise ValueError("lines: cash has no processor fee")
            if line.fee_yen > line.amount_yen:
                raise ValueError("lines: a fee cannot exceed the amount")
        return self


class SettlementDifference(BaseModel):
    """Where a settlement and the ledger disagree, for one method and brand."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: PaymentMethod
    brand: str | None
    ledger_count: int
    reported_count: int
    ledger_amount_yen: int
    reported_amount_yen: int
    count_difference: int = Field(description="reported - ledger")
    amount_difference_yen: int = Field(description="reported - ledger")


class SettlementReconciledV1(Event):
    """A facility's day was reconciled (調定): the settlement batch matches the ledger.

    Gross is the revenue recorded; fee the processor's fee (繰替払い); net what is remitted.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.SettlementReconciled.v1"
    subject: ClassVar[str] = "payments.settlement.reconciled.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="SettlementReconciled.v1",
        json_schema_extra={
            "examples": [
                {
                    "batch_id": "shiminka-20261124-paypay",
                    "facility_code": "shiminka",
                    "business_date": "2026-11-24",
                    "gross_yen": 3600,
                    "fee_yen": 108,
                    "net_yen": 3492,
                }
            ]
        },
    )

    batch_id: str
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    business_date: date
    gross_yen: int = Field(ge=0, description="Revenue recorded, in integer yen.")
    fee_yen: int = Field(ge=0, description="The processor's fee (繰替払い).")
    net_yen: int = Field(ge=0, description="What is remitted: gross minus fee.")

    def aggregate_id(self) -> str:
        return self.batch_id


class SettlementMismatchV1(Event):
    """A settlement batch disagrees with the ledger: the differences, per method and brand."""

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.SettlementMismatch.v1"
    subject: ClassVar[str] = "payments.settlement.mismatch.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="SettlementMismatch.v1",
        json_schema_extra={
            "examples": [
                {
                    "batch_id": "shiminka-20261124-paypay",
                    "facility_code": "shiminka",
                    "business_date": "2026-11-24",
                    "differences": [
                        {
                            "method": "qr",
                            "brand": "PayPay",
                            "ledger_count": 12,
                            "reported_count": 13,
                            "ledger_amount_yen": 3600,
                            "reported_amount_yen": 3900,
                            "count_difference": 1,
                            "amount_difference_yen": 300,
                        }
                    ],
                }
            ]
        },
    )

    batch_id: str
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    business_date: date
    differences: list[SettlementDifference] = Field(min_length=1)

    def aggregate_id(self) -> str:
        return self.batch_id


# --- what terminals publish ------------------------------------------------------------------

TERMINAL_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,63}$"
TRANSACTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

CARD_NUMBER = re.compile(r"(?<!\d)\d(?:[ -]?\d){11,18}(?!\d)")
"""What a card number (PAN) looks like: a run of 12 to 19 digits, maybe split by spaces or
hyphens, not part of a longer run. Refused wherever it appears, Luhn-valid or not (a terminal
sends a token instead), and masked in what is kept of a refused message: the one pattern."""


def mask_card_numbers(text: str) -> str:
    """``text`` with every card number replaced by asterisks but its last four characters."""
    return CARD_NUMBER.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:], text)


def contains_card_number(text: str) -> bool:
    """True when ``text`` holds a 12-19 digit run that could be a card number (PAN)."""
    return CARD_NUMBER.search(text) is not None


def _holds_card_number(value: Any) -> bool:
    """True when a string (or an integer) anywhere in ``value`` looks like a card number.

    Walks the parsed payload without building lists, and skips strings too short to hold
    12 digits: this runs on every terminal message.
    """
    if isinstance(value, str):
        return len(value) >= 12 and CARD_NUMBER.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_card_number(k) or _holds_card_number(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_card_number(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) >= 10**11 and CARD_NUMBER.search(str(value)) is not None
    return False


class TerminalTransactionKind(StrEnum):
    """What happened at the terminal: a capture (売上), a refund (返金) or a void (取消)."""

    CAPTURE = "capture"
    REFUND = "refund"
    VOID = "void"


class CardDetails(BaseModel):
    """What a terminal may send about a card: a token from its processor, the brand and the
    last four digits. Never the card number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    brand: str = Field(min_length=1, max_length=40)
    last4: str = Field(pattern=r"^[0-9]{4}$")


class TerminalTransactionV1(Event):
    """A transaction at a facility's terminal (multi-payment terminal or POS register).

    Published by the terminal itself on ``terminals.<facility>.<terminal>.tx.v1`` as a CloudEvent
    in binary mode: headers ``ce-specversion: 1.0``, ``ce-type`` (this type), ``ce-source:
    /terminals/<terminal>``, ``ce-id: <terminal>/<transaction_id>``, ``ce-time`` with its UTC
    offset, and ``Nats-Msg-Id`` equal to ``ce-id``. A terminal may publish only on its own
    subject (NATS permissions). Payments dedupes by (terminal, transaction id) for ever.

    A refund or void names the capture it undoes (``original_transaction_id``, on the same
    terminal unless ``original_terminal_id`` says otherwise). Cards travel as a token, the
    brand and the last four digits; a message holding anything like a full card number (12-19
    digits in a row, anywhere) is refused and dead-lettered with the number masked.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.terminals.TerminalTransaction.v1"
    subject: ClassVar[str] = "terminals.*.*.tx.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="TerminalTransaction.v1",
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "T01-000123",
                    "terminal_id": "shiminka-t01",
                    "facility_code": "shiminka",
                    "kind": "capture",
                    "method": "qr",
                    "brand": "PayPay",
                    "amount_yen": 300,
                    "item": "住民票の写し",
                    "occurred_at": "2026-11-24T10:15:00+09:00",
                },
                {
                    "transaction_id": "T01-000124",
                    "terminal_id": "shiminka-t01",
                    "facility_code": "shiminka",
                    "kind": "capture",
                    "method": "credit",
                    "brand": "Visa",
                    "amount_yen": 750,
                    "item": "除籍謄本",
                    "occurred_at": "2026-11-24T10:20:00+09:00",
                    "card": {"token": "tok_9f8e7d6c5b4a", "brand": "Visa", "last4": "4242"},
                },
                {
                    "transaction_id": "T01-000125",
                    "terminal_id": "shiminka-t01",
                    "facility_code": "shiminka",
                    "kind": "refund",
                    "method": "qr",
                    "brand": "PayPay",
                    "amount_yen": 300,
                    "item": "住民票の写し",
                    "occurred_at": "2026-11-24T10:30:00+09:00",
                    "original_transaction_id": "T01-000123",
                },
            ]
        },
    )

    transaction_id: str = Field(
        pattern=TRANSACTION_ID_PATTERN,
        description="The terminal's own id of this transaction, unique on that terminal.",
    )
    terminal_id: str = Field(pattern=TERMINAL_ID_PATTERN)
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    kind: TerminalTransactionKind
    method: PaymentMethod
    brand: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="PayPay, d払い, au PAY, 楽天ペイ, 交通系IC, nanaco, WAON, iD, QUICPay, Visa, "
        "Mastercard, JCB, ...; required unless cash.",
    )
    amount_yen: int = Field(gt=0, le=10_000_000, description="Integer yen.")
    item: str = Field(min_length=1, max_length=100, description="Item or fee type.")
    occurred_at: AwareDatetime = Field(description="With its UTC offset.")
    card: CardDetails | None = Field(default=None, description="Credit cards only.")
    original_transaction_id: str | None = Field(default=None, pattern=TRANSACTION_ID_PATTERN)
    original_terminal_id: str | None = Field(default=None, pattern=TERMINAL_ID_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _no_card_number(cls, data: Any) -> Any:
        if _holds_card_number(data):
            raise ValueError(
                "a full card number (PAN) is refused: send card.token, card.brand and "
                "card.last4 instead"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.method is PaymentMethod.CASH:
            if self.card is not None:
                raise ValueError("card: only for method credit")
        elif self.brand is None:
            raise ValueError("brand: required unless the method is cash")
        credit_capture = (
            self.method is PaymentMethod.CREDIT and self.kind is TerminalTransactionKind.CAPTURE
        )
        if credit_capture and self.card is None:
            raise ValueError("card: a credit capture carries token, brand and last4")
        if self.method not in (PaymentMethod.CREDIT, PaymentMethod.CASH) and self.card:
            raise ValueError("card: only for method credit")
        undoes = self.kind is not TerminalTransactionKind.CAPTURE
        if undoes and self.original_transaction_id is None:
            raise ValueError(f"original_transaction_id: required for a {self.kind.value}")
        if not undoes and self.original_transaction_id is not None:
            raise ValueError("original_transaction_id: only for a refund or void")
        return self

    @property
    def message_id(self) -> str:
        """The ``ce-id`` (and ``Nats-Msg-Id``) a terminal gives this transaction."""
        return f"{self.terminal_id}/{self.transaction_id}"

    def aggregate_id(self) -> str:
        return self.message_id


class ProviderPaymentConfirmation(BaseModel):
    """Command: the payment provider confirms that an application fee was paid online.

    POSTed by the provider to ``/webhooks/provider`` with ``X-Provider-Timestamp`` (Unix
    seconds) and ``X-Provider-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``.
    ``event_id`` is the provider's id of this notice: the same notice again is answered with the
    outcome of the first and changes nothing. The provider's status endpoint (``GET
    /payments/{reference}``) lists the same notices for the payment sweep.
    """

    model_config = ConfigDict(
        extra="forbid",
        title="ProviderPaymentConfirmation",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "evt_01JD8ZP2Q4",
                    "reference": "PR-7KQ2M9XW4T",
                    "amount_yen": 300,
                    "method": "credit",
                    "brand": "Visa",
                    "paid_at": "2026-11-24T09:05:00+09:00",
                }
            ]
        },
    )

    event_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The provider's id of this notice. Like every field here, it must not hold "
        "a run of 12 or more digits: that could be a card number, and the notice is refused.",
    )
    reference: str = Field(min_length=1, max_length=40)
    amount_yen: int = Field(gt=0)
    method: PaymentMethod
    brand: str = Field(min_length=1, max_length=40)
    paid_at: AwareDatetime

    @model_validator(mode="before")
    @classmethod
    def _no_card_number(cls, data: Any) -> Any:
        if _holds_card_number(data):
            raise ValueError("a full card number (PAN) is refused")
        return data

    @model_validator(mode="after")
    def _cashless(self) -> Self:
        if self.method is PaymentMethod.CASH:
            raise ValueError("method: an online payment is never cash")
        return self


class TerminalTransactionVersion(BaseModel):
    """What a terminal said about one of its transaction ids: enough to tell two messages
    under the same (terminal, transaction id) apart. No card data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TerminalTransactionKind
    method: PaymentMethod
    brand: str | None = Field(default=None, max_length=40)
    amount_yen: int = Field(gt=0)
    item: str | None = Field(
        default=None, max_length=100, description="A capture's item; none for a refund or void."
    )
    occurred_at: AwareDatetime
    original_transaction_id: str | None = Field(
        default=None,
        pattern=TRANSACTION_ID_PATTERN,
        description="The capture a refund or void undoes.",
    )

    def describe(self) -> str:
        """One line for a dead letter's reason: ``capture 300 yen qr PayPay 住民票の写し at …``
        (the time in Asia/Tokyo, whatever offset it came with)."""
        words = [self.kind.value, f"{self.amount_yen} yen", self.method.value]
        words += [w for w in (self.brand, self.item) if w]
        if self.original_transaction_id:
            words.append(f"of {self.original_transaction_id}")
        return " ".join(words) + f" at {self.occurred_at.astimezone(_TOKYO).isoformat()}"


class TerminalTransactionConflictV1(Event):
    """A terminal sent a transaction id it had used before, with other content (金額, 決済手段
    or time differ): a terminal that reset its counter, or a faulty one.

    The repeat is not posted (the first version stays in the ledger) and is dead-lettered with
    both versions in its reason; this event tells finance, who must find out which is right and
    correct the ledger or have the terminal re-send under a new id. A repeat with the same
    content is a harmless duplicate and announced nowhere.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.payments.TerminalTransactionConflict.v1"
    subject: ClassVar[str] = "payments.terminal_transaction.conflict.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="TerminalTransactionConflict.v1",
        json_schema_extra={
            "examples": [
                {
                    "terminal_id": "shiminka-t01",
                    "transaction_id": "T01-000123",
                    "facility_code": "shiminka",
                    "posted": {
                        "kind": "capture",
                        "method": "qr",
                        "brand": "PayPay",
                        "amount_yen": 300,
                        "item": "住民票の写し",
                        "occurred_at": "2026-11-24T10:15:00+09:00",
                    },
                    "received": {
                        "kind": "capture",
                        "method": "emoney",
                        "brand": "交通系IC",
                        "amount_yen": 450,
                        "item": "戸籍謄本",
                        "occurred_at": "2026-12-01T09:02:00+09:00",
                    },
                    "detected_at": "2026-12-01T09:02:01+09:00",
                }
            ]
        },
    )

    terminal_id: str = Field(pattern=TERMINAL_ID_PATTERN)
    transaction_id: str = Field(pattern=TRANSACTION_ID_PATTERN)
    facility_code: str = Field(pattern=FACILITY_CODE_PATTERN)
    posted: TerminalTransactionVersion = Field(description="What the ledger holds for the id.")
    received: TerminalTransactionVersion = Field(description="The conflicting repeat, refused.")
    detected_at: AwareDatetime

    def aggregate_id(self) -> str:
        return f"{self.terminal_id}/{self.transaction_id}"


def terminal_subject(facility_code: str, terminal_id: str) -> str:
    """The relative subject a terminal publishes its transactions on."""
    return f"terminals.{facility_code}.{terminal_id}.tx.v1"


class TerminalSettlementV1(Event):
    """A terminal's settlement batch for its facility's day (日計), published by the terminal.

    On ``terminals.<facility>.<terminal>.settlement.v1``, a CloudEvent like a transaction, with
    ``ce-id: <terminal>/<batch_id>``. Payments reconciles it exactly like a batch POSTed to
    ``/settlements`` by the processor.
    """

    event_type: ClassVar[str] = f"{TYPE_PREFIX}.terminals.TerminalSettlement.v1"
    subject: ClassVar[str] = "terminals.*.*.settlement.v1"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="TerminalSettlement.v1",
        json_schema_extra={
            "examples": [
                {
                    "terminal_id": "shiminka-t01",
                    "batch": {
                        "batch_id": "shiminka-t01-20261124",
                        "facility_code": "shiminka",
                        "business_date": "2026-11-24",
                        "processor": "指定納付受託者",
                        "lines": [
                            {
                                "method": "qr",
                                "brand": "PayPay",
                                "count": 12,
                                "amount_yen": 3600,
                                "fee_yen": 108,
                            }
                        ],
                    },
                }
            ]
        },
    )

    terminal_id: str = Field(pattern=TERMINAL_ID_PATTERN)
    batch: SettlementBatch

    @model_validator(mode="before")
    @classmethod
    def _no_card_number(cls, data: Any) -> Any:
        if _holds_card_number(data):
            raise ValueError("a full card number (PAN) is refused")
        return data

    @property
    def message_id(self) -> str:
        """The ``ce-id`` (and ``Nats-Msg-Id``) a terminal gives this batch."""
        return f"{self.terminal_id}/{self.batch.batch_id}"

    def aggregate_id(self) -> str:
        return self.batch.batch_id


def terminal_settlement_subject(facility_code: str, terminal_id: str) -> str:
    """The relative subject a terminal publishes its settlement batches on."""
    return f"terminals.{facility_code}.{terminal_id}.settlement.v1"


EVENTS: tuple[type[Event], ...] = (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    PaymentRequestExpiredV1,
    PaymentNeedsAttentionV1,
    PaymentAttachedV1,
    SettlementReconciledV1,
    SettlementMismatchV1,
    TerminalTransactionV1,
    TerminalSettlementV1,
    TerminalTransactionConflictV1,
)
COMMANDS: tuple[type[BaseModel], ...] = (ProviderPaymentConfirmation, SettlementBatch)
