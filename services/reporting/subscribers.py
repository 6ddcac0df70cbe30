"""Which events reporting consumes, and the projection each one feeds."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.applications import ApplicationSubmittedV1
from contracts.subjects import APPLICATIONS
from services.reporting import projections
from services.runtime.service import ConsumerBinding, ServiceContext
from services.runtime.streams import ConsumerDecl

APPLICATION_EVENTS = ConsumerDecl(
    durable="reporting_applications",
    stream=APPLICATIONS,
    subjects=(ApplicationSubmittedV1.subject,),
)


def consumers(_ctx: ServiceContext) -> Sequence[ConsumerBinding]:
    return [
        ConsumerBinding(
            APPLICATION_EVENTS,
            {ApplicationSubmittedV1: projections.count_application_by_channel},
        )
    ]
