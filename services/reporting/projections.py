"""Projections: one function per event type, applied inside the consumer's inbox transaction."""

from __future__ import annotations

import asyncpg

from contracts.applications import ApplicationSubmittedV1
from contracts.envelope import Envelope


async def count_application_by_channel(
    conn: asyncpg.Connection, event: Envelope[ApplicationSubmittedV1]
) -> None:
    await conn.execute(
        """INSERT INTO applications_by_channel (channel, count) VALUES ($1, 1)
           ON CONFLICT (channel) DO UPDATE
           SET count = applications_by_channel.count + 1, updated_at = now()""",
        event.data.channel.value,
    )
