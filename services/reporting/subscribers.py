"""Which events reporting consumes, and the projection each one feeds."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationSubmittedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureOnlinedV1,
    ProcedureRegisteredV1,
    ProcedureUpdatedV1,
)
from contracts.envelope import Event
from contracts.payments import (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    SettlementMismatchV1,
    SettlementReconciledV1,
)
from contracts.subjects import APPLICATIONS, PAYMENTS
from services.reporting import projections
from services.runtime.consumer import Handler
from services.runtime.service import ConsumerBinding, ServiceContext
from services.runtime.streams import ConsumerDecl

APPLICATION_PROJECTIONS: dict[type[Event], Handler] = {
    ApplicationSubmittedV1: projections.record_application_submitted,
    CertificateIssuedV1: projections.record_certificate_issued,
    ApplicationApprovedV1: projections.record_application_approved,
    ApplicationRejectedV1: projections.record_application_rejected,
    ApplicationWithdrawnV1: projections.record_application_withdrawn,
    ProcedureRegisteredV1: projections.record_procedure_facts,
    ProcedureUpdatedV1: projections.record_procedure_facts,
    ProcedureOnlinedV1: projections.record_procedure_facts,
}
PAYMENT_PROJECTIONS: dict[type[Event], Handler] = {
    PaymentCapturedV1: projections.record_payment_captured,
    PaymentRefundedV1: projections.record_payment_refunded,
    PaymentVoidedV1: projections.record_payment_voided,
    SettlementReconciledV1: projections.record_settlement_reconciled,
    SettlementMismatchV1: projections.record_settlement_mismatch,
}

APPLICATION_EVENTS = ConsumerDecl(
    durable="reporting_applications",
    stream=APPLICATIONS,
    subjects=tuple(e.subject for e in APPLICATION_PROJECTIONS),
)
PAYMENT_EVENTS = ConsumerDecl(
    durable="reporting_payments",
    stream=PAYMENTS,
    subjects=tuple(e.subject for e in PAYMENT_PROJECTIONS),
)

BINDINGS: tuple[ConsumerBinding, ...] = (
    ConsumerBinding(APPLICATION_EVENTS, APPLICATION_PROJECTIONS),
    ConsumerBinding(PAYMENT_EVENTS, PAYMENT_PROJECTIONS),
)
"""Each durable consumer and the projection of each event type it takes (a rebuild replays
the same table)."""


def consumers(_ctx: ServiceContext) -> Sequence[ConsumerBinding]:
    return BINDINGS
