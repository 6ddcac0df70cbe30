"""The certificate (証明書) routes: staff issue an approved application's certificate, its
applicant or staff download the PDF, and anyone checks a certificate number and verification
code."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from services.applications import certificates
from services.applications.api.applications import ApplicationView, render
from services.applications.api.deps import Ctx, IdemHeader, idempotency_of, respond
from services.applications.handlers import lifecycle
from services.applications.store.applications import get_application
from services.applications.store.certificates import get_certificate, get_certificate_pdf
from services.runtime.auth import Staff, Who

router = APIRouter()


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
    idem = idempotency_of(idempotency_key, who, request, {})
    return await respond(ctx, idem, lifecycle.issue_certificate(ctx, application_id), render)


@router.get(
    "/applications/{application_id}/certificate.pdf",
    tags=["certificates"],
    summary="Download the issued certificate (証明書) as PDF: its applicant or staff",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def download_certificate(application_id: uuid.UUID, ctx: Ctx, who: Who) -> Response:
    app = await get_application(ctx.pool, application_id)
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
