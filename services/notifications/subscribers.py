"""Which events notifications consumes. Rules (``rules.yaml``) decide what each one sends.

Every event goes to the same handler, which looks its rules up: a rule for a new event type is
data in ``rules.yaml`` plus, at most, the event's line in one of the tuples below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from contracts.applications import (
    ApplicationPaymentRequestedV1,
    ApplicationRejectedV1,
    ApplicationSubmittedV1,
    CertificateIssuedV1,
)
from contracts.envelope import Envelope, Event
from contracts.payments import (
    PaymentCapturedV1,
    PaymentNeedsAttentionV1,
    SettlementMismatchV1,
    TerminalTransactionConflictV1,
)
from contracts.subjects import APPLICATIONS, PAYMENTS, StreamDecl
from services.notifications import handlers
from services.notifications.handlers import Notifier
from services.runtime.service import ConsumerBinding
from services.runtime.streams import ConsumerDecl

APPLICATION_EVENTS: tuple[type[Event], ...] = (
    ApplicationSubmittedV1,
    ApplicationPaymentRequestedV1,
    ApplicationRejectedV1,
    CertificateIssuedV1,
)
PAYMENT_EVENTS: tuple[type[Event], ...] = (
    PaymentCapturedV1,
    SettlementMismatchV1,
    PaymentNeedsAttentionV1,
    TerminalTransactionConflictV1,
)

CONSUMED: tuple[tuple[str, StreamDecl, tuple[type[Event], ...]], ...] = (
    ("notifications_applications", APPLICATIONS, APPLICATION_EVENTS),
    ("notifications_payments", PAYMENTS, PAYMENT_EVENTS),
)


DURABLES = tuple(
    ConsumerDecl(durable=durable, stream=stream, subjects=tuple(e.subject for e in events))
    for durable, stream, events in CONSUMED
)
"""Provisioned by the operator (`cityhall provision`), one per stream."""


def bindings(notifier: Callable[[], Notifier]) -> Sequence[ConsumerBinding]:
    """One durable consumer per stream; ``notifier`` is resolved when an event arrives."""

    async def on_event(conn: asyncpg.Connection, env: Envelope[Any]) -> None:
        await handlers.on_event(notifier(), conn, env)

    return [
        ConsumerBinding(decl, dict.fromkeys(events, on_event))
        for decl, (_durable, _stream, events) in zip(DURABLES, CONSUMED, strict=True)
    ]
