"""Inbox retention: the rows of events processed longer ago than ``INBOX_RETENTION_DAYS``.

A consumer's inbox row is what makes a redelivered or re-published copy of an event change
nothing. It is needed for as long as a copy can still arrive; the retention (30 days by
default) is longer than any such horizon, and where a copy could come later the handlers'
own keys drop it (docs/reliability.md, "Inbox retention", names them). The job also prunes
``consumer_failures`` rows as old (counts of failures of messages long acked or
dead-lettered).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
"""Rows deleted per transaction: a long delete holds no lock for long, and WAL stays small."""

_PRUNE = {
    "inbox": "processed_at",
    "consumer_failures": "updated_at",
}


async def prune_inbox(pool: asyncpg.Pool, retention_s: float, chunk: int = CHUNK_ROWS) -> int:
    """Delete inbox (and failure-count) rows older than ``retention_s``; how many inbox rows
    went. Chunked, so a first run over a large table holds no long transaction."""
    pruned = {}
    for table, column in _PRUNE.items():
        deleted = 0
        while True:
            status = await pool.execute(
                f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM {table}
                        WHERE {column} < now() - make_interval(secs => $1) LIMIT $2))""",
                retention_s,
                chunk,
            )
            n = int(status.split()[-1])
            deleted += n
            if n < chunk:
                break
        pruned[table] = deleted
    if any(pruned.values()):
        log.info("inbox pruned", extra={"deleted": pruned, "retention_s": retention_s})
    return pruned["inbox"]


async def keep_inbox_pruned(pool: asyncpg.Pool, retention_days: float, interval_s: float) -> None:
    """The background job: prune every ``interval_s`` until cancelled (0 days: never)."""
    if retention_days <= 0:
        return
    while True:
        try:
            await prune_inbox(pool, retention_days * 86400)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("inbox pruning failed; trying again later")
        await asyncio.sleep(interval_s)
