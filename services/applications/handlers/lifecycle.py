"""The commands that move an application on after it was submitted: the applicant withdraws
it or asks for the fee; staff review, approve or reject it and issue its certificate (証明書),
numbered and rendered as a PDF in the same transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg

from services.applications import certificates, domain
from services.applications.domain import Application, ApplicationStatus, Procedure
from services.applications.handlers.transactions import (
    UnknownProcedure,
    load_application,
    save_application,
)
from services.applications.store.certificates import StoredCertificate, insert_certificate
from services.applications.store.procedures import get_procedure
from services.runtime.service import ServiceContext

TOKYO = ZoneInfo("Asia/Tokyo")
KORIYAMA_CODE = "072036"
"""全国地方公共団体コード of Koriyama: the prefix of its certificate numbers."""


Step = Callable[[asyncpg.Connection], Awaitable[Application]]


def withdraw(
    ctx: ServiceContext, application_id: uuid.UUID, check: Callable[[Application], None]
) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await load_application(conn, application_id)
        check(app)
        return await save_application(ctx, conn, *domain.withdraw(app, datetime.now(UTC)))

    return effect


def request_fee(
    ctx: ServiceContext, application_id: uuid.UUID, check: Callable[[Application], None]
) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await load_application(conn, application_id)
        check(app)
        procedure = await get_procedure(conn, app.procedure_code)
        if procedure is None:
            raise UnknownProcedure(f"procedure {app.procedure_code!r} left the catalog")
        return await save_application(
            ctx, conn, *domain.request_fee(app, procedure, datetime.now(UTC))
        )

    return effect


def start_review(ctx: ServiceContext, application_id: uuid.UUID) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await load_application(conn, application_id)
        return await save_application(ctx, conn, *domain.start_review(app, datetime.now(UTC)))

    return effect


def approve(ctx: ServiceContext, application_id: uuid.UUID) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await load_application(conn, application_id)
        return await save_application(ctx, conn, *domain.approve(app, datetime.now(UTC)))

    return effect


def reject(ctx: ServiceContext, application_id: uuid.UUID, reason: str) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await load_application(conn, application_id)
        return await save_application(ctx, conn, *domain.reject(app, reason, datetime.now(UTC)))

    return effect


def issue_certificate(ctx: ServiceContext, application_id: uuid.UUID) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await load_application(conn, application_id)
        procedure = await get_procedure(conn, app.procedure_code)
        if procedure is None:
            raise UnknownProcedure(f"procedure {app.procedure_code!r} left the catalog")
        now = datetime.now(UTC)
        if app.status is ApplicationStatus.APPROVED and procedure.yields_certificate:
            seq = await conn.fetchval("SELECT nextval('certificate_numbers')")
            number = f"{KORIYAMA_CODE}-{now.astimezone(TOKYO).year}-{seq:07d}"
        else:
            number = ""  # the domain refuses this step below
        issued, events = domain.issue_certificate(app, procedure, number, now)
        code = certificates.new_verification_code()
        pdf = certificates.render_pdf(_certificate_content(issued, procedure, number, code, now))
        await save_application(ctx, conn, issued, events)
        await insert_certificate(
            conn,
            StoredCertificate(
                number=number,
                application_id=app.id,
                procedure_code=procedure.code,
                procedure_name=procedure.name_ja,
                issued_at=now,
                verification_code_hash=certificates.code_hash(code),
            ),
            pdf,
        )
        return issued

    return effect


def _certificate_content(
    app: Application, procedure: Procedure, number: str, code: str, now: datetime
) -> certificates.CertificateContent:
    titles = procedure.form_schema.get("properties", {})
    details = {"申請番号": str(app.id)}
    for key, value in app.form.items():
        title = titles.get(key, {}).get("title", key) if isinstance(titles, dict) else key
        details[str(title)] = value if isinstance(value, str) else json.dumps(value)
    return certificates.CertificateContent(
        number=number,
        verification_code=code,
        procedure_name=procedure.name_ja,
        issued_at=now,
        holder_name=app.identity.name if app.identity else None,
        holder_address=app.identity.address if app.identity else None,
        details=details,
    )
