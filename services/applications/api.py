"""HTTP routes of the applications service: parse, call a handler, map errors to HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel

from contracts.applications import Channel, SubmitApplication
from services.applications import handlers, store
from services.applications.domain import Application
from services.runtime.service import ServiceContext, service_context

router = APIRouter(tags=["applications"])
Ctx = Annotated[ServiceContext, Depends(service_context)]


class ApplicationView(BaseModel):
    id: uuid.UUID
    procedure_code: str
    channel: Channel
    status: str
    submitted_at: datetime

    @classmethod
    def of(cls, app: Application) -> ApplicationView:
        return cls(
            id=app.id,
            procedure_code=app.procedure_code,
            channel=app.channel,
            status=app.status.value,
            submitted_at=app.submitted_at,
        )


@router.post(
    "/applications",
    status_code=status.HTTP_201_CREATED,
    response_model=ApplicationView,
    summary="Submit an application (online, or entered by counter or mail staff)",
)
async def submit_application(cmd: SubmitApplication, ctx: Ctx) -> ApplicationView:
    return ApplicationView.of(await handlers.submit_application(ctx, cmd))


@router.get("/applications/{application_id}", response_model=ApplicationView)
async def get_application(application_id: uuid.UUID, ctx: Ctx) -> ApplicationView:
    app = await store.get_application(ctx.pool, application_id)
    if app is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no application {application_id}")
    return ApplicationView.of(app)
