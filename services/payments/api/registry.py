"""The facilities (public) and the terminals registered at them (staff)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from contracts.facilities import FACILITIES
from services.payments.api.deps import Ctx, Staff
from services.payments.store.terminals import list_terminals

router = APIRouter()


class FacilityOut(BaseModel):
    """A facility (施設) that takes payments."""

    code: str
    name_ja: str
    kind: str
    paid_for: str


class TerminalOut(BaseModel):
    """A registered terminal (決済端末)."""

    terminal_id: str
    facility_code: str
    kind: str
    registered_at: datetime


@router.get("/facilities", response_model=list[FacilityOut])
async def facilities() -> list[FacilityOut]:
    return [
        FacilityOut(code=f.code, name_ja=f.name_ja, kind=f.kind.value, paid_for=f.paid_for.value)
        for f in FACILITIES
    ]


@router.get("/terminals", response_model=list[TerminalOut])
async def terminals(ctx: Ctx, _staff: Staff) -> list[TerminalOut]:
    return [
        TerminalOut(
            terminal_id=t.terminal_id,
            facility_code=t.facility_code,
            kind=t.kind,
            registered_at=t.registered_at,
        )
        for t in await list_terminals(ctx.pool)
    ]
