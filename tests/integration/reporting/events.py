"""Known events for reporting's tests: applications and payments across months and facilities."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from contracts.applications import (
    ApplicationStepV1,
    ApplicationSubmittedV1,
    Channel,
    ProcedureFactsV1,
    ProcedureGroup,
)
from contracts.envelope import Envelope
from contracts.payments import (
    PaymentCapturedV1,
    PaymentChannel,
    PaymentMethod,
    PaymentRefundedV1,
    PaymentVoidedV1,
    SettlementDifference,
    SettlementMismatchV1,
    SettlementReconciledV1,
)
from services.reporting.domain import TOKYO


def tokyo(text: str) -> datetime:
    """``2026-10-31 23:30`` in Asia/Tokyo."""
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO)


def application(channel: str, procedure: str, at: str) -> Envelope[Any]:
    return Envelope.new(
        ApplicationSubmittedV1(
            application_id=uuid.uuid4(),
            procedure_code=procedure,
            channel=Channel(channel),
            submitted_at=tokyo(at),
        ),
        source="/cityhall/tests",
    )


def capture(
    facility: str,
    method: str,
    brand: str | None,
    amount_yen: int,
    at: str,
    payment_id: uuid.UUID | None = None,
) -> Envelope[Any]:
    pid = payment_id or uuid.uuid4()
    return Envelope.new(
        PaymentCapturedV1(
            payment_id=pid,
            facility_code=facility,
            terminal_id=f"{facility}-t01",
            channel=PaymentChannel.TERMINAL,
            method=PaymentMethod(method),
            brand=brand,
            amount_yen=amount_yen,
            item="住民票の写し",
            occurred_at=tokyo(at),
            receipt_number=f"{facility}-{pid.hex[:8]}",
        ),
        source="/cityhall/tests",
    )


# Applications: October 2026 (JUMINHYO: 2 online, 1 counter; KOSEKI: 1 mail) and November 2026
# (JUMINHYO: 1 online, 1 mail). 23:30 on 31 October in Tokyo is still October (14:30 UTC) and
# 00:30 on 1 November in Tokyo is already November although it is 31 October in UTC.
APPLICATIONS = [
    ("online", "JUMINHYO", "2026-10-01 09:00"),
    ("online", "JUMINHYO", "2026-10-31 23:30"),
    ("counter", "JUMINHYO", "2026-10-15 10:00"),
    ("mail", "KOSEKI", "2026-10-20 11:00"),
    ("online", "JUMINHYO", "2026-11-01 00:30"),
    ("mail", "JUMINHYO", "2026-11-10 14:00"),
]

# Payments: shiminka (市民課) and bijutsukan (美術館) over two months, every method.
PAYMENTS = [
    ("shiminka", "qr", "PayPay", 300, "2026-10-05 09:10"),
    ("shiminka", "cash", None, 300, "2026-10-05 09:20"),
    ("shiminka", "emoney", "交通系IC", 450, "2026-10-06 10:00"),
    ("bijutsukan", "credit", "Visa", 1000, "2026-10-31 23:59"),
    ("bijutsukan", "cash", None, 1000, "2026-11-01 00:01"),
    ("shiminka", "qr", "d払い", 750, "2026-11-02 13:00"),
]


def refund(
    payment_id: uuid.UUID,
    amount_yen: int,
    refunded_total_yen: int,
    at: str,
    facility: str = "shiminka",
    method: str = "qr",
    brand: str | None = "PayPay",
) -> Envelope[Any]:
    return Envelope.new(
        PaymentRefundedV1(
            refund_id=uuid.uuid4(),
            payment_id=payment_id,
            facility_code=facility,
            terminal_id=f"{facility}-t01",
            channel=PaymentChannel.TERMINAL,
            method=PaymentMethod(method),
            brand=brand,
            amount_yen=amount_yen,
            refunded_total_yen=refunded_total_yen,
            occurred_at=tokyo(at),
        ),
        source="/cityhall/tests",
    )


def void(
    payment_id: uuid.UUID,
    amount_yen: int,
    at: str,
    facility: str = "shiminka",
    method: str = "cash",
    brand: str | None = None,
) -> Envelope[Any]:
    return Envelope.new(
        PaymentVoidedV1(
            payment_id=payment_id,
            facility_code=facility,
            terminal_id=f"{facility}-t01",
            method=PaymentMethod(method),
            brand=brand,
            amount_yen=amount_yen,
            occurred_at=tokyo(at),
        ),
        source="/cityhall/tests",
    )


def submitted_with_id(
    application_id: uuid.UUID, channel: str, procedure: str, at: str
) -> Envelope[Any]:
    return Envelope.new(
        ApplicationSubmittedV1(
            application_id=application_id,
            procedure_code=procedure,
            channel=Channel(channel),
            submitted_at=tokyo(at),
        ),
        source="/cityhall/tests",
    )


def step(
    kind: type[ApplicationStepV1], application_id: uuid.UUID, procedure: str, at: str, **extra: Any
) -> Envelope[Any]:
    return Envelope.new(
        kind(
            application_id=application_id, procedure_code=procedure, occurred_at=tokyo(at), **extra
        ),
        source="/cityhall/tests",
    )


def procedure(
    kind: type[ProcedureFactsV1],
    code: str,
    department: str,
    group: int,
    online_since: str | None,
    planned: str | None,
    at: str,
) -> Envelope[Any]:
    return Envelope.new(
        kind(
            procedure_code=code,
            name_ja=f"{code}の手続き",
            department=department,
            group=ProcedureGroup(group),
            fee_yen=300,
            yields_certificate=True,
            online_since=date.fromisoformat(online_since) if online_since else None,
            planned_online_quarter=planned,
            occurred_at=tokyo(at),
        ),
        source="/cityhall/tests",
    )


def settlement_reconciled(
    batch: str, day: str, gross: int, fee: int, facility: str = "shiminka"
) -> Envelope[Any]:
    return Envelope.new(
        SettlementReconciledV1(
            batch_id=batch,
            facility_code=facility,
            business_date=date.fromisoformat(day),
            gross_yen=gross,
            fee_yen=fee,
            net_yen=gross - fee,
        ),
        source="/cityhall/tests",
    )


def settlement_mismatch(batch: str, day: str, facility: str = "shiminka") -> Envelope[Any]:
    return Envelope.new(
        SettlementMismatchV1(
            batch_id=batch,
            facility_code=facility,
            business_date=date.fromisoformat(day),
            differences=[
                SettlementDifference(
                    method=PaymentMethod.QR,
                    brand="PayPay",
                    ledger_count=1,
                    reported_count=2,
                    ledger_amount_yen=750,
                    reported_amount_yen=1500,
                    count_difference=1,
                    amount_difference_yen=750,
                )
            ],
        ),
        source="/cityhall/tests",
    )
