"""HTTP routes of the applications service: parse, call a handler, map errors to HTTP.

Who is calling (``services.runtime.auth``), always ``Authorization: Bearer <token>``:
* staff (職員) with their opaque token (``APPLICATIONS_STAFF_TOKENS``);
* a citizen with the JWT the city's login gateway signed (``sub``: the pseudonymous id of
  the citizen's account). An applicant sees and acts on only their own applications;
* the public: the catalog, certificate verification, and group-1 online submissions (記名:
  the typed name suffices; nobody but staff can look such an application up afterwards).

Every POST takes an optional ``Idempotency-Key`` header: the same key and request replay the
first response; the same key with another request is refused (422).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.applications import Channel, ProcedureGroup, SubmitApplication
from services.applications import certificates, domain
from services.applications.domain import Application, ApplicationStatus, Procedure
from services.applications.forms import FormInvalid
from services.applications.handlers import lifecycle, submission, transactions
from services.applications.handlers.transactions import IdempotencyKey
from services.applications.identity import (
    SIGNING_PURPOSE,
    Challenge,
    IdentityRefusal,
    IdentityRefused,
)
from services.applications.settings import (
    ApplicationsSettings,
    load_applications_settings,
    trust_config,
)
from services.applications.store import applications, procedures
from services.applications.store.certificates import get_certificate, get_certificate_pdf
from services.runtime.auth import Caller, Staff, Who, caller, require_signed_in
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters
from services.runtime.service import ServiceContext, service_context

T = TypeVar("T")


async def _context(request: Request) -> ServiceContext:
    """The running service's context. Dependencies here are ``async def`` because FastAPI
    runs a plain ``def`` dependency in a worker thread: two thread hops per request for work
    that does no I/O."""
    return service_context(request)


Ctx = Annotated[ServiceContext, Depends(_context)]


def settings_of(ctx: ServiceContext) -> ApplicationsSettings:
    """This service's own settings, read once per running service."""
    return ctx.provide(ApplicationsSettings, load_applications_settings)


MAX_OFFSET = 1_000_000
"""Deepest page start a list accepts; beyond PostgreSQL's bigint an offset was a 500."""


router = APIRouter(
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route identifies its caller and counts it against the caller's rate limit."""


IdemHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, description="Retry-safe key."),
]


# -- views ------------------------------------------------------------------------------------


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


def _render(app: Application) -> dict[str, Any]:
    return ApplicationView.of(app).model_dump(mode="json")


class ApplicationPage(BaseModel):
    items: list[ApplicationView]
    total: int
    limit: int
    offset: int


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


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Told to the applicant.")


# -- errors, mapped in one place --------------------------------------------------------------


def _problem(loc: list[str | int], msg: str, kind: str) -> list[dict[str, Any]]:
    return [{"loc": loc, "msg": msg, "type": kind}]


def http_error(exc: Exception) -> HTTPException:
    if isinstance(exc, FormInvalid):
        return HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {"loc": ["body", *p.field.split(".")], "msg": p.message, "type": "form"}
                for p in exc.problems
            ],
        )
    if isinstance(exc, IdentityRefused):
        problem = _problem(["body", "identity"], str(exc), f"identity.{exc.reason.value}")
        if exc.reason is IdentityRefusal.SIGN_IN_REQUIRED:
            return HTTPException(
                status.HTTP_401_UNAUTHORIZED, problem, headers={"WWW-Authenticate": "Bearer"}
            )
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problem)
    if isinstance(exc, transactions.UnknownProcedure):
        return HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            _problem(["body", "procedure_code"], str(exc), "unknown_procedure"),
        )
    if isinstance(exc, transactions.IdempotencyKeyReused):
        return HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            _problem(["header", "Idempotency-Key"], str(exc), "idempotency_key_reused"),
        )
    if isinstance(exc, transactions.ApplicationNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, domain.IllegalTransition | domain.FeeUnpaid):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    if isinstance(exc, domain.NotACertificateProcedure | domain.NoFeeDue):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    raise exc


async def _answer(outcome: Awaitable[tuple[int, Any]]) -> JSONResponse:
    try:
        code, body = await outcome
    except (domain.ApplicationError, FormInvalid, IdentityRefused) as exc:
        raise http_error(exc) from exc
    return JSONResponse(body, status_code=code)


async def _respond(
    ctx: ServiceContext,
    idempotency: IdempotencyKey | None,
    effect: Callable[[asyncpg.Connection], Awaitable[T]],
    render: Callable[[T], Any],
    status_code: int = status.HTTP_200_OK,
) -> JSONResponse:
    return await _answer(transactions.in_transaction(ctx, idempotency, effect, render, status_code))


def _key(key: str | None, who: Caller, request: Request, body: Any) -> IdempotencyKey | None:
    if key is None:
        return None
    return IdempotencyKey.of(key, who.key_scope, request.method, request.url.path, body)


# -- identity (本人確認) -------------------------------------------------------------------------


class ChallengeView(BaseModel):
    """A challenge to sign with the My Number card: the signed content binds ``applicant``,
    ``challenge`` and ``purpose`` with the application (see ``SignedApplication``)."""

    challenge: str = Field(examples=["q3Vb0kX2mJ8sT1yR6wE4uI7oP9aS5dF3gH2jK8lZ0xC"])
    applicant: uuid.UUID = Field(description="The caller's own account id (the token's sub).")
    purpose: str = Field(examples=[SIGNING_PURPOSE])
    expires_at: datetime

    @classmethod
    def of(cls, c: Challenge) -> ChallengeView:
        return cls(
            challenge=c.value,
            applicant=c.applicant_id,
            purpose=SIGNING_PURPOSE,
            expires_at=c.expires_at,
        )


def _render_challenge(c: Challenge) -> dict[str, Any]:
    return ChallengeView.of(c).model_dump(mode="json")


@router.post(
    "/identity/challenges",
    status_code=status.HTTP_201_CREATED,
    response_model=ChallengeView,
    tags=["identity"],
    summary="A single-use challenge for the signed-in applicant to sign a group-2 application",
)
async def issue_challenge(
    ctx: Ctx, who: Who, request: Request, idempotency_key: IdemHeader = None
) -> JSONResponse:
    """Step 1 of a signed (group-2) submission: the applicant asks for a challenge, signs it
    with the application using the My Number card's signature key, and submits both within
    the challenge's lifetime (``APPLICATIONS_IDENTITY_CHALLENGE_LIFETIME_S``)."""
    if who.applicant_id is None:
        if who.staff_id is not None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "challenges are for applicants: a signature binds the applicant's own account",
            )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "sign in: a challenge is issued to the applicant of the login gateway's token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    lifetime = timedelta(seconds=settings_of(ctx).identity_challenge_lifetime_s)
    idem = _key(idempotency_key, who, request, {})
    return await _respond(
        ctx,
        idem,
        submission.issue_challenge(who.applicant_id, lifetime),
        _render_challenge,
        status.HTTP_201_CREATED,
    )


# -- applications -----------------------------------------------------------------------------


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
    idem = _key(idempotency_key, who, request, cmd.model_dump(mode="json"))
    trust = trust_config(settings_of(ctx))
    return await _answer(
        submission.submit_application(ctx, cmd, who.applicant_id, trust, idem, _render)
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

    idem = _key(idempotency_key, who, request, {})
    return await _respond(ctx, idem, lifecycle.withdraw(ctx, application_id, check), _render)


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

    idem = _key(idempotency_key, who, request, {})
    return await _respond(ctx, idem, lifecycle.request_fee(ctx, application_id, check), _render)


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
    idem = _key(idempotency_key, who, request, {})
    return await _respond(ctx, idem, lifecycle.start_review(ctx, application_id), _render)


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
    idem = _key(idempotency_key, who, request, {})
    return await _respond(ctx, idem, lifecycle.approve(ctx, application_id), _render)


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
    idem = _key(idempotency_key, who, request, body.model_dump())
    return await _respond(ctx, idem, lifecycle.reject(ctx, application_id, body.reason), _render)


@router.post(
    "/applications/{application_id}/certificate",
    response_model=ApplicationView,
    tags=["staff"],
    summary="Issue the certificate (証明書) of an approved certificate application",
)
async def issue_certificate(
    application_id: uuid.UUID,
    ctx: Ctx,
    who: Staff,
    request: Request,
    idempotency_key: IdemHeader = None,
) -> JSONResponse:
    idem = _key(idempotency_key, who, request, {})
    return await _respond(ctx, idem, lifecycle.issue_certificate(ctx, application_id), _render)


@router.get(
    "/applications/{application_id}/certificate.pdf",
    tags=["certificates"],
    summary="Download the issued certificate (証明書) as PDF: its applicant or staff",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def download_certificate(application_id: uuid.UUID, ctx: Ctx, who: Who) -> Response:
    app = await applications.get_application(ctx.pool, application_id)
    if app is None or not who.may_see(app.applicant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no application {application_id}")
    pdf = await get_certificate_pdf(ctx.pool, application_id)
    if pdf is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no certificate issued yet")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{app.certificate_number}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )


class VerificationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    certificate_number: str = Field(
        min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$", examples=["072036-2026-0000001"]
    )
    verification_code: str = Field(min_length=1, max_length=20)


class VerificationResult(BaseModel):
    """Whether a certificate is genuine; what it is, never whose it is."""

    genuine: bool
    certificate_number: str
    procedure_name: str | None = None
    issued_at: datetime | None = None


@router.post(
    "/certificates/verify",
    response_model=VerificationResult,
    tags=["certificates"],
    summary="Public: is this certificate number and verification code genuine?",
)
async def verify_certificate(body: VerificationRequest, ctx: Ctx) -> VerificationResult:
    """Read-only (so a retry, with or without Idempotency-Key, gets the same answer); a POST so
    the code does not end up in URLs and access logs. Reveals no personal data."""
    cert = await get_certificate(ctx.pool, body.certificate_number)
    if cert is None or not certificates.code_matches(
        body.verification_code, cert.verification_code_hash
    ):
        return VerificationResult(genuine=False, certificate_number=body.certificate_number)
    return VerificationResult(
        genuine=True,
        certificate_number=cert.number,
        procedure_name=cert.procedure_name,
        issued_at=cert.issued_at,
    )


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
