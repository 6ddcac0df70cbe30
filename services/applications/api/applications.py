"""The application routes: submit, list and look up applications, and the steps the applicant
(withdraw, fee request) and staff (review, approve, reject) take on one; with the views they
answer."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.applications import Channel, SubmitApplication
from services.applications.api.deps import (
    MAX_OFFSET,
    Ctx,
    IdemHeader,
    answer,
    idempotency_of,
    respond,
    settings_of,
)
from services.applications.domain import Application, ApplicationStatus
from services.applications.handlers import lifecycle, submission, transactions
from services.applications.settings import trust_config
from services.applications.store import applications
from services.runtime.auth import Staff, Who, require_signed_in
from services.runtime.telemetry import tag_current_span

router = APIRouter()


class IdentityView(BaseModel):
    """The verified signer of a group-2 application and the check (never a My Number)."""

    name: str
    address: str
    birth_date: date | None
    certificate_serial: str
    issuer: str
    checked_at: datetime
    result: str


class ApplicationView(BaseModel):
    id: uuid.UUID
    procedure_code: str
    channel: Channel
    status: str
    submitted_at: datetime
    fee_yen: int
    paid_at: datetime | None
    decided_at: datetime | None
    rejection_reason: str | None
    certificate_number: str | None
    form: dict[str, Any]
    identity: IdentityView | None = None

    @classmethod
    def of(cls, app: Application) -> ApplicationView:
        return cls(
            id=app.id,
            procedure_code=app.procedure_code,
            channel=app.channel,
            status=app.status.value,
            submitted_at=app.submitted_at,
            fee_yen=app.fee_yen,
            paid_at=app.paid_at,
            decided_at=app.decided_at,
            rejection_reason=app.rejection_reason,
            certificate_number=app.certificate_number,
            form=app.form,
            identity=IdentityView(**asdict(app.identity)) if app.identity else None,
        )


def render(app: Application) -> dict[str, Any]:
    tag_current_span(application_id=app.id)  # the HTTP span, for `cityhall trace <id>`
    return ApplicationView.of(app).model_dump(mode="json")


class ApplicationPage(BaseModel):
    items: list[ApplicationView]
    total: int
    limit: int
    offset: int


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Told to the applicant.")


@router.post(
    "/applications",
    status_code=status.HTTP_201_CREATED,
    response_model=ApplicationView,
    tags=["applications"],
    summary="Submit an application (online, or entered by counter or mail staff)",
)
async def submit_application(
    cmd: SubmitApplication,
    ctx: Ctx,
    who: Who,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    if cmd.channel is not Channel.ONLINE and who.staff_id is None:
        # Counter (窓口) and mail (郵送) applications are entered by staff: anyone else
        # claiming those channels would skew the online usage rate.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{cmd.channel.value} applications are entered by staff: "
            "send a staff credential (Authorization: Bearer <token>)",
        )
    idem = idempotency_of(idempotency_key, who, request, cmd.model_dump(mode="json"))
    trust = trust_config(settings_of(ctx))
    return await answer(
        submission.submit_application(ctx, cmd, who.applicant_id, trust, idem, render)
    )


@router.get("/applications", response_model=ApplicationPage, tags=["applications"])
async def list_applications(
    ctx: Ctx,
    who: Who,
    status_: Annotated[ApplicationStatus | None, Query(alias="status")] = None,
    procedure_code: str | None = None,
    department: str | None = None,
    submitted_from: AwareDatetime | None = None,
    submitted_to: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ApplicationPage:
    """Staff see every application (filtered); an applicant sees only their own."""
    require_signed_in(who)
    f = applications.ApplicationFilter(
        status=status_,
        procedure_code=procedure_code,
        department=department,
        submitted_from=submitted_from,
        submitted_to=submitted_to,
        applicant_id=who.applicant_id if who.staff_id is None else None,
    )
    apps, total = await applications.list_applications(ctx.pool, f, limit=limit, offset=offset)
    return ApplicationPage(
        items=[ApplicationView.of(a) for a in apps], total=total, limit=limit, offset=offset
    )


@router.get("/applications/{application_id}", response_model=ApplicationView, tags=["applications"])
async def get_application(application_id: uuid.UUID, ctx: Ctx, who: Who) -> ApplicationView:
    app = await applications.get_application(ctx.pool, application_id)
    if app is None or not who.may_see(app.applicant_id):
        # The same answer whether it does not exist or is someone else's.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no application {application_id}")
    return ApplicationView.of(app)


@router.post(
    "/applications/{application_id}/withdraw",
    response_model=ApplicationView,
    tags=["applications"],
    summary="The applicant withdraws the application (取下げ), before review",
)
async def withdraw(
    application_id: uuid.UUID,
    ctx: Ctx,
    who: Who,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    def check(app: Application) -> None:
        if not who.may_see(app.applicant_id):
            raise transactions.ApplicationNotFound(f"no application {application_id}")

    idem = idempotency_of(idempotency_key, who, request, {})
    return await respond(ctx, idem, lifecycle.withdraw(ctx, application_id, check), render)


@router.post(
    "/applications/{application_id}/fee-request",
    response_model=ApplicationView,
    tags=["applications"],
    summary="Ask payments to collect the fee (手数料): submitted -> awaiting_payment",
)
async def request_fee(
    application_id: uuid.UUID,
    ctx: Ctx,
    who: Who,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    """By the applicant (online) or by staff (counter, mail), when the applicant will pay."""

    def check(app: Application) -> None:
        if not who.may_see(app.applicant_id):
            raise transactions.ApplicationNotFound(f"no application {application_id}")

    idem = idempotency_of(idempotency_key, who, request, {})
    return await respond(ctx, idem, lifecycle.request_fee(ctx, application_id, check), render)


@router.post(
    "/applications/{application_id}/review",
    response_model=ApplicationView,
    tags=["staff"],
    summary="Staff take the application up for review (審査)",
)
async def start_review(
    application_id: uuid.UUID,
    ctx: Ctx,
    who: Staff,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    idem = idempotency_of(idempotency_key, who, request, {})
    return await respond(ctx, idem, lifecycle.start_review(ctx, application_id), render)


@router.post(
    "/applications/{application_id}/approve",
    response_model=ApplicationView,
    tags=["staff"],
    summary="Staff approve the application (承認)",
)
async def approve(
    application_id: uuid.UUID,
    ctx: Ctx,
    who: Staff,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    idem = idempotency_of(idempotency_key, who, request, {})
    return await respond(ctx, idem, lifecycle.approve(ctx, application_id), render)


@router.post(
    "/applications/{application_id}/reject",
    response_model=ApplicationView,
    tags=["staff"],
    summary="Staff reject the application (却下) with a reason",
)
async def reject(
    application_id: uuid.UUID,
    body: Rejection,
    ctx: Ctx,
    who: Staff,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    idem = idempotency_of(idempotency_key, who, request, body.model_dump())
    return await respond(ctx, idem, lifecycle.reject(ctx, application_id, body.reason), render)
