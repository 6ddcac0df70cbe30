"""One function per event or command: load, decide (domain), save state and events together.

``notify`` runs inside the consumer's inbox transaction, so a notification row exists exactly
when its cause event is recorded as processed: a redelivered event finds its inbox row and
adds nothing, and the (cause event, rule, recipient) unique key guards the rest.
``record_attempt`` writes what a delivery attempt came to, with NotificationSent or
NotificationFailed in the outbox, in one transaction.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from pydantic import BaseModel

from contracts import EVENT_TYPES
from contracts.envelope import Envelope, Event
from contracts.notifications import NotificationFailedV1, NotificationSentV1, RecipientKind
from services.notifications import domain, store, templates
from services.notifications.domain import (
    Contact,
    DeliveryError,
    GiveUp,
    Language,
    Outcome,
    Recipient,
    RetryLater,
    RetryPolicy,
    Rule,
    RuleBook,
    Sent,
)
from services.notifications.settings import NotificationSettings
from services.notifications.templates import TemplateParts, UnknownTemplate
from services.runtime.outbox import add_events
from services.runtime.telemetry import current_trace_headers

log = logging.getLogger(__name__)


class RulesInvalid(ValueError):
    """The rules file does not load: the service refuses to start with it."""


def load_rules(path: Path) -> RuleBook:
    """Read and check the rules file: each live rule's template exists and is for its event."""
    try:
        book = RuleBook.model_validate(yaml.safe_load(path.read_text("utf-8")))
    except Exception as exc:
        raise RulesInvalid(f"{path}: {exc}") from exc
    dormant = {r.id for r in book.dormant()}
    shipped = templates.shipped()
    for rule in book.rules:
        if rule.id in dormant:
            log.info("rule waits for its event", extra={"rule": rule.id, "event": rule.event})
            continue
        tpl = shipped.get(rule.template)
        if tpl is None:
            raise RulesInvalid(f"{path}: rule {rule.id}: no template {rule.template!r}")
        if tpl.event != rule.event:
            raise RulesInvalid(
                f"{path}: rule {rule.id} is on {rule.event} but template {rule.template} is "
                f"about {tpl.event}"
            )
    return book


@dataclass
class Notifier:
    """What the handlers need besides a connection: settings, rules and the retry policy."""

    settings: NotificationSettings
    rules: RuleBook
    policy: RetryPolicy
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> Notifier:
        return cls(
            settings=settings,
            rules=load_rules(settings.rules_file),
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_s=settings.backoff_base_s,
                max_s=settings.backoff_max_s,
            ),
        )


# -- events -> notifications ------------------------------------------------------------------


async def on_event(notifier: Notifier, conn: asyncpg.Connection, env: Envelope[Any]) -> None:
    """The consumer's handler for every event a rule may be about."""
    await notify(conn, notifier, env.data, cause_event_id=env.id, event_time=env.time)


async def notify(
    conn: asyncpg.Connection,
    notifier: Notifier,
    data: Event | BaseModel,
    *,
    cause_event_id: str,
    event_time: datetime,
) -> int:
    """Add a pending notification per rule and recipient; return how many were new.

    An event about an application whose applicant is not known yet (it came before the event
    naming the applicant: streams have no order between them) waits in ``awaiting_applicant``
    and is notified when the applicant becomes known.
    """
    fields = dict(data)
    application_id, applicant_id = domain.application_of(fields), domain.applicant_of(fields)
    added = 0
    if application_id is not None:
        await store.lock_application(conn, application_id)
        if applicant_id is not None:
            await store.remember_applicant(conn, application_id, applicant_id)
            for parked in await store.take_parked(conn, application_id):
                model = EVENT_TYPES[parked.ce_type]
                added += await notify(
                    conn,
                    notifier,
                    model.model_validate_json(parked.payload),
                    cause_event_id=parked.cause_event_id,
                    event_time=parked.event_time,
                )
    parked_already = False
    for rule in notifier.rules.for_event(domain.title_of(data)):
        if not rule.applies_to(fields):
            continue
        recipients = await _recipients(conn, notifier, rule, fields)
        if recipients is None:
            if not parked_already and application_id is not None and isinstance(data, Event):
                await store.park_event(
                    conn,
                    application_id,
                    store.AwaitingEvent(
                        cause_event_id=cause_event_id,
                        ce_type=data.event_type,
                        event_time=event_time,
                        payload=data.model_dump_json(),
                    ),
                )
                parked_already = True
            continue
        for recipient in recipients:
            added += await _add(conn, notifier, rule, recipient, fields, cause_event_id, event_time)
    return added


async def _add(
    conn: asyncpg.Connection,
    notifier: Notifier,
    rule: Rule,
    recipient: Recipient,
    fields: dict[str, Any],
    cause_event_id: str,
    event_time: datetime,
) -> int:
    version, parts = await template_for(conn, rule.template, recipient.language)
    rendered = templates.render(
        parts,
        templates.context_for(
            fields,
            event_id=cause_event_id,
            event_time=event_time,
            language=recipient.language,
            portal_url=notifier.settings.portal_url,
        ),
    )
    return int(
        await store.insert_notification(
            conn,
            store.NewNotification(
                id=uuid.uuid4(),
                cause_event_id=cause_event_id,
                rule=rule.id,
                recipient_key=recipient.key,
                recipient_kind=recipient.kind,
                channel=recipient.target.channel,
                address=recipient.target.address,
                language=recipient.language,
                template=rule.template,
                template_version=version,
                subject=rendered.subject,
                body_text=rendered.text,
                body_html=rendered.html,
                trace_headers=current_trace_headers(),
            ),
        )
    )


async def _recipients(
    conn: asyncpg.Connection, notifier: Notifier, rule: Rule, fields: dict[str, Any]
) -> list[Recipient] | None:
    """Who the rule tells; None when the applicant of the event's application is not known yet."""
    group = rule.staff_group
    if group is not None:
        return domain.staff_recipients(group, notifier.settings.staff)
    applicant_id = domain.applicant_of(fields)
    if applicant_id is None and (application_id := domain.application_of(fields)) is not None:
        applicant_id = await store.applicant_of_application(conn, application_id)
        if applicant_id is None:
            return None
    if applicant_id is None:
        return []
    contact = await store.get_contact(conn, applicant_id)
    recipient = domain.applicant_recipient(applicant_id, contact, rule.kind)
    return [recipient] if recipient is not None else []


async def template_for(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, language: Language
) -> tuple[int, TemplateParts]:
    """The active version: the newest saved one, else the shipped file (version 0)."""
    saved = await store.active_template(conn, name, language)
    if saved is not None:
        return saved
    shipped = templates.shipped().get(name)
    if shipped is None:
        raise UnknownTemplate(name)
    return 0, shipped.languages[language]


def template_event(notifier: Notifier, name: str) -> str:
    """Which event a template is about (from the shipped file, else a rule that uses it)."""
    shipped = templates.shipped().get(name)
    if shipped is not None:
        return shipped.event
    for rule in notifier.rules.rules:
        if rule.template == name:
            return rule.event
    raise UnknownTemplate(name)


async def save_template(
    conn: asyncpg.Connection,
    notifier: Notifier,
    name: str,
    language: Language,
    parts: TemplateParts,
) -> int:
    """Check the template against its event, then store it as the next (active) version."""
    templates.check(template_event(notifier, name), parts, language.value)
    return await store.save_template(conn, name, language, parts)


# -- contacts ---------------------------------------------------------------------------------


async def put_contact(pool: asyncpg.Pool, applicant_id: uuid.UUID, contact: Contact) -> None:
    await store.put_contact(pool, applicant_id, contact)


# -- delivery attempts ------------------------------------------------------------------------


async def record_attempt(
    pool: asyncpg.Pool,
    notifier: Notifier,
    n: store.Claimed,
    result: str | DeliveryError,
) -> Outcome:
    """What one attempt came to: sent, retry later, or dead, with its event in the outbox."""
    outcome = domain.decide(n.attempts, result, notifier.policy, notifier.rng)
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        if isinstance(outcome, Sent):
            if await store.mark_sent(conn, n.id, outcome.provider_message_id):
                await add_events(conn, [_envelope(_sent(n, outcome, now), now)])
        elif isinstance(outcome, RetryLater):
            await store.mark_failed(conn, n.id, outcome.delay_s, outcome.reason)
        elif await store.mark_dead(conn, n.id, outcome.reason):
            await add_events(conn, [_envelope(_failed(n, outcome, now), now)])
    return outcome


def _envelope(data: Event, now: datetime) -> Envelope[Event]:
    return Envelope.new(data, time=now)


def _sent(n: store.Claimed, outcome: Sent, now: datetime) -> NotificationSentV1:
    return NotificationSentV1(
        notification_id=n.id,
        rule=n.rule,
        cause_event_id=n.cause_event_id,
        channel=n.channel,
        recipient_kind=RecipientKind(n.recipient_kind),
        provider_message_id=outcome.provider_message_id[:500],
        attempts=n.attempts,
        sent_at=now,
    )


def _failed(n: store.Claimed, outcome: GiveUp, now: datetime) -> NotificationFailedV1:
    return NotificationFailedV1(
        notification_id=n.id,
        rule=n.rule,
        cause_event_id=n.cause_event_id,
        channel=n.channel,
        recipient_kind=RecipientKind(n.recipient_kind),
        reason=outcome.reason[:1000],
        permanent=outcome.permanent,
        attempts=n.attempts,
        failed_at=now,
    )
