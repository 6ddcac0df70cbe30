"""asyncpg queries on the notifications schema only."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

import asyncpg

from contracts.notifications import NotificationChannel, RecipientKind
from services.notifications.domain import Contact, Language, NotificationKind, NotificationStatus
from services.notifications.templates import TemplateParts

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


# -- contacts -----------------------------------------------------------------------------


async def put_contact(conn: Conn, applicant_id: uuid.UUID, contact: Contact) -> None:
    await conn.execute(
        """INSERT INTO contacts (applicant_id, email, phone, language, opt_outs)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (applicant_id) DO UPDATE
           SET email = $2, phone = $3, language = $4, opt_outs = $5, updated_at = now()""",
        applicant_id,
        contact.email,
        contact.phone,
        contact.language.value,
        sorted(k.value for k in contact.opt_outs),
    )


async def get_contact(conn: Conn, applicant_id: uuid.UUID) -> Contact | None:
    row = await conn.fetchrow(
        "SELECT email, phone, language, opt_outs FROM contacts WHERE applicant_id = $1",
        applicant_id,
    )
    if row is None:
        return None
    return Contact(
        email=row["email"],
        phone=row["phone"],
        language=Language(row["language"]),
        opt_outs=frozenset(NotificationKind(k) for k in row["opt_outs"]),
    )


async def delete_contact(conn: Conn, applicant_id: uuid.UUID) -> bool:
    result = await conn.execute("DELETE FROM contacts WHERE applicant_id = $1", applicant_id)
    return bool(result.endswith(" 1"))


async def remember_applicant(
    conn: Conn, application_id: uuid.UUID, applicant_id: uuid.UUID
) -> None:
    await conn.execute(
        """INSERT INTO application_applicants (application_id, applicant_id) VALUES ($1, $2)
           ON CONFLICT (application_id) DO NOTHING""",
        application_id,
        applicant_id,
    )


async def applicant_of_application(conn: Conn, application_id: uuid.UUID) -> uuid.UUID | None:
    value = await conn.fetchval(
        "SELECT applicant_id FROM application_applicants WHERE application_id = $1",
        application_id,
    )
    return value if isinstance(value, uuid.UUID) else None


async def lock_application(conn: asyncpg.Connection, application_id: uuid.UUID) -> None:
    """Serialise the transactions about one application (learning its applicant vs. parking
    an event for it), so neither misses the other's commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"app:{application_id}")


@dataclass(frozen=True)
class AwaitingEvent:
    cause_event_id: str
    ce_type: str
    event_time: datetime
    payload: str


async def park_event(conn: Conn, application_id: uuid.UUID, event: AwaitingEvent) -> None:
    await conn.execute(
        """INSERT INTO awaiting_applicant (cause_event_id, application_id, ce_type, event_time,
                                           payload)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cause_event_id) DO NOTHING""",
        event.cause_event_id,
        application_id,
        event.ce_type,
        event.event_time,
        event.payload,
    )


async def take_parked(conn: Conn, application_id: uuid.UUID) -> list[AwaitingEvent]:
    rows = await conn.fetch(
        """DELETE FROM awaiting_applicant WHERE application_id = $1
           RETURNING cause_event_id, ce_type, event_time, payload""",
        application_id,
    )
    return [AwaitingEvent(**dict(r.items())) for r in rows]


async def delete_parked_before(conn: Conn, older_than_s: float) -> int:
    result = await conn.execute(
        "DELETE FROM awaiting_applicant WHERE parked_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(result.split()[-1])


# -- notifications ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewNotification:
    id: uuid.UUID
    cause_event_id: str
    rule: str
    recipient_key: str
    recipient_kind: RecipientKind
    channel: NotificationChannel
    address: str
    language: Language
    template: str
    template_version: int
    subject: str
    body_text: str
    body_html: str
    trace_headers: dict[str, str] = field(default_factory=dict)
    """The W3C context of the event that caused it: the sender's span continues that trace."""


async def insert_notification(conn: Conn, n: NewNotification) -> bool:
    """Add a pending notification; False when (event, rule, recipient) already has one."""
    row = await conn.fetchval(
        """INSERT INTO notifications (id, cause_event_id, rule, recipient_key, recipient_kind,
                channel, address, language, template, template_version, subject, body_text,
                body_html, trace_headers)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
           ON CONFLICT (cause_event_id, rule, recipient_key) DO NOTHING
           RETURNING id""",
        n.id,
        n.cause_event_id,
        n.rule,
        n.recipient_key,
        n.recipient_kind.value,
        n.channel.value,
        n.address,
        n.language.value,
        n.template,
        n.template_version,
        n.subject,
        n.body_text,
        n.body_html,
        json.dumps(n.trace_headers),
    )
    return row is not None


@dataclass(frozen=True)
class Claimed:
    """A notification the sender holds for one attempt (its lease runs until next_attempt_at)."""

    id: uuid.UUID
    cause_event_id: str
    rule: str
    recipient_kind: RecipientKind
    channel: NotificationChannel
    address: str
    language: Language
    subject: str
    body_text: str
    body_html: str
    attempts: int
    trace_headers: dict[str, str] = field(default_factory=dict)


async def claim_due(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[Claimed]:
    """Take up to ``limit`` due notifications; other senders skip them (SKIP LOCKED) and the
    lease keeps them from being taken again until it runs out (a sender that died)."""
    rows = await pool.fetch(
        """UPDATE notifications n
           SET attempts = n.attempts + 1,
               next_attempt_at = now() + make_interval(secs => $2),
               first_attempt_at = coalesce(n.first_attempt_at, now()),
               last_attempt_at = now(),
               updated_at = now()
           WHERE n.id IN (
               SELECT id FROM notifications
               WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()
               ORDER BY next_attempt_at
               LIMIT $1
               FOR UPDATE SKIP LOCKED)
           RETURNING n.id, n.cause_event_id, n.rule, n.recipient_kind, n.channel, n.address,
                     n.language, n.subject, n.body_text, n.body_html, n.attempts,
                     n.trace_headers::text AS trace_headers""",
        limit,
        lease_s,
    )
    return [
        Claimed(
            id=r["id"],
            cause_event_id=r["cause_event_id"],
            rule=r["rule"],
            recipient_kind=RecipientKind(r["recipient_kind"]),
            channel=NotificationChannel(r["channel"]),
            address=r["address"],
            language=Language(r["language"]),
            subject=r["subject"],
            body_text=r["body_text"],
            body_html=r["body_html"],
            attempts=r["attempts"],
            trace_headers=json.loads(r["trace_headers"]),
        )
        for r in rows
    ]


async def mark_sent(conn: Conn, notification_id: uuid.UUID, provider_message_id: str) -> bool:
    result = await conn.execute(
        """UPDATE notifications SET status = 'sent', provider_message_id = $2, last_error = NULL,
                  updated_at = now(), finished_at = now()
           WHERE id = $1 AND status IN ('pending', 'failed')""",
        notification_id,
        provider_message_id,
    )
    return bool(result.endswith(" 1"))


async def mark_failed(conn: Conn, notification_id: uuid.UUID, delay_s: float, reason: str) -> None:
    await conn.execute(
        """UPDATE notifications SET status = 'failed', last_error = $3, updated_at = now(),
                  next_attempt_at = now() + make_interval(secs => $2)
           WHERE id = $1 AND status IN ('pending', 'failed')""",
        notification_id,
        delay_s,
        reason[:1000],
    )


async def mark_dead(conn: Conn, notification_id: uuid.UUID, reason: str) -> bool:
    result = await conn.execute(
        """UPDATE notifications SET status = 'dead', last_error = $2, updated_at = now(),
                  finished_at = now()
           WHERE id = $1 AND status IN ('pending', 'failed')""",
        notification_id,
        reason[:1000],
    )
    return bool(result.endswith(" 1"))


@dataclass(frozen=True)
class NotificationRow:
    id: uuid.UUID
    cause_event_id: str
    rule: str
    recipient_kind: str
    channel: str
    address: str
    status: NotificationStatus
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime


_COLUMNS = """id, cause_event_id, rule, recipient_kind, channel, address, status, attempts,
              last_error, provider_message_id, created_at, updated_at, next_attempt_at"""


def _row(r: asyncpg.Record) -> NotificationRow:
    return NotificationRow(**dict(r.items()) | {"status": NotificationStatus(r["status"])})


async def list_notifications(
    conn: Conn, statuses: list[NotificationStatus], limit: int
) -> list[NotificationRow]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM notifications WHERE status = ANY($1::text[])
            ORDER BY updated_at DESC LIMIT $2""",
        [s.value for s in statuses],
        limit,
    )
    return [_row(r) for r in rows]


async def get_notification(conn: Conn, notification_id: uuid.UUID) -> NotificationRow | None:
    r = await conn.fetchrow(f"SELECT {_COLUMNS} FROM notifications WHERE id = $1", notification_id)
    return None if r is None else _row(r)


async def delete_finished_before(conn: Conn, older_than_s: float) -> int:
    result = await conn.execute(
        """DELETE FROM notifications
           WHERE finished_at < now() - make_interval(secs => $1)""",
        older_than_s,
    )
    return int(result.split()[-1])


# -- templates --------------------------------------------------------------------------------


async def active_template(
    conn: Conn, name: str, language: Language
) -> tuple[int, TemplateParts] | None:
    row = await conn.fetchrow(
        """SELECT version, subject, body_text, body_html FROM template_versions
           WHERE name = $1 AND language = $2 ORDER BY version DESC LIMIT 1""",
        name,
        language.value,
    )
    if row is None:
        return None
    return row["version"], TemplateParts(
        subject=row["subject"], text=row["body_text"], html=row["body_html"]
    )


async def save_template(
    conn: asyncpg.Connection, name: str, language: Language, parts: TemplateParts
) -> int:
    """Add the next version (one saver at a time per template and language)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"tpl:{name}:{language}")
        version: int = await conn.fetchval(
            """INSERT INTO template_versions (name, language, version, subject, body_text,
                                              body_html)
               SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5
               FROM template_versions WHERE name = $1 AND language = $2
               RETURNING version""",
            name,
            language.value,
            parts.subject,
            parts.text,
            parts.html,
        )
    return version


# -- DLQ watch --------------------------------------------------------------------------------


async def dlq_reported(conn: Conn, stream: str) -> int | None:
    value = await conn.fetchval("SELECT reported_count FROM dlq_watch WHERE stream = $1", stream)
    return None if value is None else int(value)


async def set_dlq_reported(conn: Conn, stream: str, count: int) -> None:
    await conn.execute(
        """INSERT INTO dlq_watch (stream, reported_count) VALUES ($1, $2)
           ON CONFLICT (stream) DO UPDATE SET reported_count = $2, reported_at = now()""",
        stream,
        count,
    )
