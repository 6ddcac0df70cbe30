"""Which events reporting consumes, and the projection each one feeds."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.envelope import Event
from contracts.subjects import APPLICATIONS, PAYMENTS
from services.reporting import projections
from services.runtime.consumer import Handler
from services.runtime.service import ConsumerBinding, ServiceContext
from services.runtime.streams import ConsumerDecl

# One Batched projection per consumer: the runtime hands it every run of new events of these
# types in stream order, so a fetched batch is applied with a few set-based statements
# (projections.APPLICATION_ROWS / PAYMENT_ROWS say what each type becomes).
APPLICATION_PROJECTIONS: dict[type[Event], Handler] = dict.fromkeys(
    projections.APPLICATION_ROWS, projections.record_application_events
)
PAYMENT_PROJECTIONS: dict[type[Event], Handler] = dict.fromkeys(
    projections.PAYMENT_ROWS, projections.record_payment_events
)

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
