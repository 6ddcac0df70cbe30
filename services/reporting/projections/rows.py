"""What the projections need of each event: one plain row per event, made by the function
its type names in ``projections.APPLICATION_ROWS`` / ``PAYMENT_ROWS``. The year-of-data
generator (``bench/kpi_queries.py``) makes these rows directly."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import NamedTuple

from contracts.applications import ApplicationStepV1, ApplicationSubmittedV1, ProcedureFactsV1
from contracts.envelope import Envelope
from contracts.payments import (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    SettlementMismatchV1,
    SettlementReconciledV1,
)


class Submission(NamedTuple):
    application_id: uuid.UUID
    procedure_code: str
    channel: str
    submitted_at: datetime


class Step(NamedTuple):
    application_id: uuid.UUID
    step: str  # certificate_issued, approved, rejected, withdrawn
    occurred_at: datetime


class Procedure(NamedTuple):
    procedure_code: str
    name_ja: str
    department: str
    procedure_group: int
    online_since: date | None
    planned_quarter: str | None
    sample: bool
    as_of: datetime


class Capture(NamedTuple):
    payment_id: uuid.UUID
    facility_code: str
    method: str
    brand: str  # '' when none (cash)
    amount_yen: int
    captured_at: datetime


class Reversal(NamedTuple):
    reversal_id: str  # the refund id, or 'void:<payment id>'
    payment_id: uuid.UUID
    kind: str  # refund or void
    amount_yen: int
    occurred_at: datetime


class Settlement(NamedTuple):
    batch_id: str
    facility_code: str
    business_date: date
    reconciled: bool
    gross_yen: int | None
    fee_yen: int | None
    as_of: datetime


ApplicationRow = Submission | Step | Procedure
PaymentRow = Capture | Reversal | Settlement


def submission(event: Envelope[ApplicationSubmittedV1]) -> Submission:
    d = event.data
    return Submission(d.application_id, d.procedure_code, d.channel.value, d.submitted_at)


def step(name: str) -> Callable[[Envelope[ApplicationStepV1]], Step]:
    """The row of a step after submission that turnaround and completion count (the reason
    of a rejection is not kept)."""

    def row(event: Envelope[ApplicationStepV1]) -> Step:
        return Step(event.data.application_id, name, event.data.occurred_at)

    return row


def procedure(event: Envelope[ProcedureFactsV1]) -> Procedure:
    d = event.data
    return Procedure(
        d.procedure_code,
        d.name_ja,
        d.department,
        int(d.group),
        d.online_since,
        d.planned_online_quarter,
        d.sample,
        d.occurred_at,
    )


def capture(event: Envelope[PaymentCapturedV1]) -> Capture:
    d = event.data
    return Capture(
        d.payment_id, d.facility_code, d.method.value, d.brand or "", d.amount_yen, d.occurred_at
    )


def refund(event: Envelope[PaymentRefundedV1]) -> Reversal:
    d = event.data
    return Reversal(str(d.refund_id), d.payment_id, "refund", d.amount_yen, d.occurred_at)


def void(event: Envelope[PaymentVoidedV1]) -> Reversal:
    d = event.data
    return Reversal(f"void:{d.payment_id}", d.payment_id, "void", d.amount_yen, d.occurred_at)


def reconciled(event: Envelope[SettlementReconciledV1]) -> Settlement:
    d = event.data
    return Settlement(
        d.batch_id, d.facility_code, d.business_date, True, d.gross_yen, d.fee_yen, event.time
    )


def mismatch(event: Envelope[SettlementMismatchV1]) -> Settlement:
    d = event.data
    return Settlement(d.batch_id, d.facility_code, d.business_date, False, None, None, event.time)
