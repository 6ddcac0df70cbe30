"""Which events applications consumes: PaymentCaptured and PaymentAttached, for fees."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from contracts.payments import PaymentAttachedV1, PaymentCapturedV1
from contracts.subjects import PAYMENTS
from services.applications.handlers import payments
from services.runtime.service import ConsumerBinding, ServiceContext
from services.runtime.streams import ConsumerDecl

PAYMENT_EVENTS = ConsumerDecl(
    durable="applications_payments",
    stream=PAYMENTS,
    subjects=(PaymentCapturedV1.subject, PaymentAttachedV1.subject),
)


def consumers(ctx: ServiceContext) -> Sequence[ConsumerBinding]:
    return [
        ConsumerBinding(
            PAYMENT_EVENTS,
            {
                PaymentCapturedV1: functools.partial(payments.on_payment_captured, ctx),
                PaymentAttachedV1: functools.partial(payments.on_payment_attached, ctx),
            },
        )
    ]
