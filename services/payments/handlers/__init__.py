"""Payments' handlers: load, decide (domain), save state + ledger + outbox in one transaction.

One module per family of events and requests: ``registry`` (terminals and their keys),
``ingestion`` (terminals' captures, refunds and voids), ``online`` (application fees paid
online: requests, the provider's notices, expiry, the sweep's schedule), ``refunds`` (the one
refund path), ``staff_queue`` (online payments needing a decision), ``reconciliation`` (daily
settlement batches), ``receipts`` (printing); ``captures`` is what terminals and the provider
share. This module holds what every family needs: the id namespace and the outgoing event.
"""

from __future__ import annotations

import uuid

from contracts.envelope import Envelope, Event

IDS = uuid.UUID("4d1b7c1e-9a53-4f5e-8d0c-0f3a1c2b7e11")
"""Namespace of the name-based (uuid5) ids payments derives from terminal transaction ids, so
that the same transaction always gets the same payment id."""


def envelope(data: Event) -> Envelope[Event]:
    """An event for the outbox, typed as any event (``add_events`` takes a mixed list)."""
    return Envelope.new(data)
