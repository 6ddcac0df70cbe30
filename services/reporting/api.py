"""KPI query API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from contracts.applications import Channel
from services.runtime.service import ServiceContext, service_context

router = APIRouter(prefix="/kpi", tags=["kpi"])
Ctx = Annotated[ServiceContext, Depends(service_context)]


class ApplicationsByChannel(BaseModel):
    """Applications received, by channel, and the share that came online."""

    online: int
    counter: int
    mail: int
    total: int
    online_share: float | None
    """online / total, rounded half-even to 4 decimals; null when there are no applications."""


@router.get("/applications/by-channel", response_model=ApplicationsByChannel)
async def applications_by_channel(ctx: Ctx) -> ApplicationsByChannel:
    rows = await ctx.pool.fetch("SELECT channel, count FROM applications_by_channel")
    counts = {c.value: 0 for c in Channel}
    counts.update({r["channel"]: int(r["count"]) for r in rows})
    total = sum(counts.values())
    return ApplicationsByChannel(
        online=counts["online"],
        counter=counts["counter"],
        mail=counts["mail"],
        total=total,
        online_share=round(counts["online"] / total, 4) if total else None,
    )
