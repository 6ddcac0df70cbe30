"""asyncpg queries on the applications schema only."""

from __future__ import annotations

import uuid

import asyncpg

from contracts.applications import Channel
from services.applications.domain import Application, ApplicationStatus


async def insert_application(conn: asyncpg.Connection, app: Application) -> None:
    await conn.execute(
        """INSERT INTO applications (id, procedure_code, channel, status, submitted_at)
           VALUES ($1, $2, $3, $4, $5)""",
        app.id,
        app.procedure_code,
        app.channel.value,
        app.status.value,
        app.submitted_at,
    )


async def get_application(
    conn: asyncpg.Connection | asyncpg.Pool, app_id: uuid.UUID
) -> Application | None:
    row = await conn.fetchrow(
        "SELECT id, procedure_code, channel, status, submitted_at FROM applications WHERE id = $1",
        app_id,
    )
    if row is None:
        return None
    return Application(
        id=row["id"],
        procedure_code=row["procedure_code"],
        channel=Channel(row["channel"]),
        status=ApplicationStatus(row["status"]),
        submitted_at=row["submitted_at"],
    )
