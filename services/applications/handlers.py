"""One function per command: load, decide (domain), save state and events in one transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.applications import SubmitApplication
from services.applications import domain, store
from services.applications.domain import Application
from services.runtime.outbox import add_events
from services.runtime.service import ServiceContext


async def submit_application(ctx: ServiceContext, cmd: SubmitApplication) -> Application:
    app, event = domain.submit(cmd.procedure_code, cmd.channel, datetime.now(UTC))
    async with ctx.pool.acquire() as conn, conn.transaction():
        await store.insert_application(conn, app)
        await add_events(conn, [ctx.new_event(event, time=app.submitted_at)])
    return app
