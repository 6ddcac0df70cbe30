"""Events and commands of the payments service (決済): captures, refunds, receipts, settlements."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.envelope import TYPE_PREFIX, Event

FACILITY_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,39}$"


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
        default=None, description="Set when the payment settles an application's fee."
    )

    def aggregate_id(self) -> str:
        return str(self.payment_id)


EVENTS: tuple[type[Event], ...] = (PaymentCapturedV1,)
COMMANDS: tuple[type[BaseModel], ...] = ()
