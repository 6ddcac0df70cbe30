"""What operators do about deliveries: list the failed and the pending, send a dead one again.

A resend takes the notification as it is (the same id, hence the same ``Message-ID``, the same
rendered message) to the recipient's **current** address: the applicant's contact as it is now
(the operator corrected it with ``PUT /contacts/{applicant_id}``), or a staff target still in
``NOTIFY_STAFF``. In one transaction it puts the row back to ``pending`` with a fresh set of
retries, records who asked, when and to which address, and adds NotificationResendRequested to
the outbox; the sender then delivers it as any other, ending in NotificationSent or
NotificationFailed. Only a dead notification is resent: one already delivered, being resent or
waiting for a retry is refused (409) with the reason, so repeating the request is harmless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from contracts.envelope import Envelope
from contracts.notifications import NotificationResendRequestedV1, RecipientKind
from services.notifications import deliveries, domain, store
from services.notifications.deliveries import Delivery, DeliveryFilter, Resend
from services.notifications.domain import NotificationKind, NotificationStatus, Rule
from services.notifications.handlers import Notifier
from services.runtime.outbox import add_events

FAILED = (NotificationStatus.DEAD,)
PENDING = (NotificationStatus.PENDING, NotificationStatus.FAILED)


class NotificationNotFound(LookupError):
    """No notification with that id (never made, or trimmed by the retention)."""


def rule_of(notifier: Notifier, rule_id: str) -> Rule | None:
    """The rule in force with that id (None once it was taken out of the rules file)."""
    return next((r for r in notifier.rules.rules if r.id == rule_id), None)


def rules_of_kind(notifier: Notifier, kind: NotificationKind | None) -> tuple[str, ...] | None:
    """The rule ids of a kind, for a filter (None: no filter)."""
    if kind is None:
        return None
    return tuple(r.id for r in notifier.rules.rules if r.kind is kind)


async def list_deliveries(
    pool: asyncpg.Pool,
    notifier: Notifier,
    f: DeliveryFilter,
    kind: NotificationKind | None,
    *,
    limit: int,
    offset: int,
) -> tuple[list[Delivery], int]:
    """Failed ones newest first; pending ones by their next attempt."""
    f = DeliveryFilter(f.statuses, rules_of_kind(notifier, kind), f.channel, f.since)
    order = "newest" if f.statuses == FAILED else "due"
    return await deliveries.list_deliveries(pool, f, order=order, limit=limit, offset=offset)


@dataclass(frozen=True)
class ResendDone:
    delivery: Delivery
    resend: Resend


async def resend(
    pool: asyncpg.Pool, notifier: Notifier, notification_id: uuid.UUID, requested_by: str
) -> ResendDone:
    """Send a dead notification again to its recipient's current address (see the module)."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        found = await deliveries.get_delivery(conn, notification_id, lock=True)
        if found is None:
            raise NotificationNotFound(f"no notification {notification_id}")
        domain.check_resendable(found.status)
        address = await current_address(conn, notifier, found)
        record = Resend(
            id=uuid.uuid4(),
            notification_id=found.id,
            requested_by=requested_by,
            requested_at=now,
            address=address,
            previous_address=found.address,
            previous_error=found.last_error,
            previous_attempts=found.attempts,
        )
        await deliveries.requeue(conn, found.id, address)
        await deliveries.record_resend(conn, record)
        await add_events(conn, [Envelope.new(_requested(found, record), time=now)])
        after = await deliveries.get_delivery(conn, found.id)
    assert after is not None
    return ResendDone(after, record)


async def current_address(conn: asyncpg.Connection, notifier: Notifier, n: Delivery) -> str:
    """Where the notification goes now: the applicant's contact as it is, or the staff target
    while ``NOTIFY_STAFF`` still names it."""
    if n.recipient_kind is RecipientKind.STAFF:
        return domain.current_staff_address(n.recipient_key, notifier.settings.staff)
    applicant = domain.applicant_in_key(n.recipient_key)
    contact = None if applicant is None else await store.get_contact(conn, applicant)
    rule = rule_of(notifier, n.rule)
    return domain.current_applicant_address(contact, None if rule is None else rule.kind)


def _requested(n: Delivery, r: Resend) -> NotificationResendRequestedV1:
    return NotificationResendRequestedV1(
        notification_id=n.id,
        rule=n.rule,
        cause_event_id=n.cause_event_id,
        channel=n.channel,
        recipient_kind=n.recipient_kind,
        requested_by=r.requested_by[:200],
        address_changed=r.address != r.previous_address,
        previous_attempts=r.previous_attempts,
        requested_at=r.requested_at,
    )
