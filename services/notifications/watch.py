"""Background watches: dead letters piling up (tell the operators) and delivery-log retention."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.subjects import DLQ
from services.notifications import handlers, store
from services.notifications.domain import DeadLettersGrowing
from services.notifications.handlers import Notifier

log = logging.getLogger(__name__)


async def check_dead_letters(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str, notifier: Notifier
) -> DeadLettersGrowing | None:
    """Tell the operators when the DLQ grew by the threshold since they were last told."""
    stream = DLQ.stream_name(namespace)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    count = int(info.state.messages)
    threshold = notifier.settings.dlq_threshold
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"dlq-watch:{stream}")
        reported = await store.dlq_reported(conn, stream) or 0
        if count < reported:  # purged or replayed: start counting from here
            await store.set_dlq_reported(conn, stream, count)
            return None
        if count - reported < threshold:
            return None
        now = datetime.now(UTC)
        finding = DeadLettersGrowing(
            dlq_stream=stream,
            dead_letters=count,
            new_dead_letters=count - reported,
            threshold=threshold,
            observed_at=now,
        )
        # The cause id names the count reached, so a second watcher adds nothing new.
        await handlers.notify(
            conn, notifier, finding, cause_event_id=f"dlq:{stream}:{count}", event_time=now
        )
        await store.set_dlq_reported(conn, stream, count)
    log.warning("dead letters growing; operators told", extra={"stream": stream, "count": count})
    return finding


async def watch_dead_letters(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str, notifier: Notifier
) -> None:
    while True:
        try:
            await check_dead_letters(pool, js, namespace, notifier)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("DLQ watch failed; trying again later")
        await asyncio.sleep(notifier.settings.dlq_check_s)


async def delete_expired(pool: asyncpg.Pool, notifier: Notifier) -> int:
    """Delete finished notifications (sent or dead) older than NOTIFY_RETENTION_DAYS."""
    days = notifier.settings.retention_days
    if days <= 0:
        return 0
    deleted = await store.delete_finished_before(pool, days * 86400)
    # Events whose applicant never became known (a counter application): nobody to tell.
    return deleted + await store.delete_parked_before(pool, days * 86400)


async def keep_retention(pool: asyncpg.Pool, notifier: Notifier) -> None:
    while True:
        try:
            deleted = await delete_expired(pool, notifier)
            if deleted:
                log.info("delivery log trimmed", extra={"deleted": deleted})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention job failed; trying again later")
        await asyncio.sleep(notifier.settings.retention_check_s)
