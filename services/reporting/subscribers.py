"""Which events reporting consumes, and the projection each one feeds."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.applications import ApplicationSubmittedV1
from contracts.payments import PaymentCapturedV1
from contracts.subjects import APPLICATIONS, PAYMENTS
from services.reporting import projections
from services.runtime.service import ConsumerBinding, ServiceContext
from services.runtime.streams import ConsumerDecl

APPLICATION_EVENTS = ConsumerDecl(
    durable="reporting_applications",
    stream=APPLICATIONS,
    subjects=(ApplicationSubmittedV1.subject,),
)
PAYMENT_EVENTS = ConsumerDecl(
    durable="reporting_payments",
    stream=PAYMENTS,
    subjects=(PaymentCapturedV1.subject,),
)

BINDINGS: tuple[ConsumerBinding, ...] = (
    ConsumerBinding(
        APPLICATION_EVENTS,
        {ApplicationSubmittedV1: projections.record_application_submitted},
    ),
    ConsumerBinding(
        PAYMENT_EVENTS,
        {PaymentCapturedV1: projections.record_payment_captured},
    ),
)
"""Each durable consumer and the projection of each event type it takes (a rebuild replays
the same table)."""


def consumers(_ctx: ServiceContext) -> Sequence[ConsumerBinding]:
    return BINDINGS
