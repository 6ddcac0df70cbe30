"""The catalog (手続き一覧) routes: search the procedures and read one, with their views."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from contracts.applications import ProcedureGroup
from services.applications.api.deps import MAX_OFFSET, Ctx
from services.applications.domain import Procedure
from services.applications.store import procedures

router = APIRouter()


class ProcedureView(BaseModel):
    code: str
    name_ja: str
    department: str
    group: ProcedureGroup
    fee_yen: int
    yields_certificate: bool
    form_schema: dict[str, Any]
    online: bool
    online_since: date | None
    planned_online_quarter: str | None
    sample: bool

    @classmethod
    def of(cls, p: Procedure) -> ProcedureView:
        return cls(
            code=p.code,
            name_ja=p.name_ja,
            department=p.department,
            group=p.group,
            fee_yen=p.fee_yen,
            yields_certificate=p.yields_certificate,
            form_schema=p.form_schema,
            online=p.online,
            online_since=p.online_since,
            planned_online_quarter=p.planned_online_quarter,
            sample=p.sample,
        )


class ProcedurePage(BaseModel):
    items: list[ProcedureView]
    total: int
    limit: int
    offset: int


# -- catalog ----------------------------------------------------------------------------------


@router.get("/procedures", response_model=ProcedurePage, tags=["catalog"])
async def search_procedures(
    ctx: Ctx,
    q: Annotated[str | None, Query(max_length=200, description="Words in name/department")] = None,
    department: str | None = None,
    group: ProcedureGroup | None = None,
    online: bool | None = None,
    sample: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ProcedurePage:
    """Search the procedure catalog (手続き一覧), ordered by code."""
    query = procedures.ProcedureQuery(
        text=q, department=department, group=group, online=online, sample=sample
    )
    found, total = await procedures.search_procedures(ctx.pool, query, limit=limit, offset=offset)
    return ProcedurePage(
        items=[ProcedureView.of(p) for p in found], total=total, limit=limit, offset=offset
    )


@router.get("/procedures/{code}", response_model=ProcedureView, tags=["catalog"])
async def get_procedure(code: str, ctx: Ctx) -> ProcedureView:
    p = await procedures.get_procedure(ctx.pool, code)
    if p is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no procedure {code}")
    return ProcedureView.of(p)
