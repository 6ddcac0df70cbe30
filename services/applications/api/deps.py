"""What the applications routes share: the running service's context and settings, the
Idempotency-Key header, and how a handler's outcome becomes the HTTP answer, with every refusal
mapped to its status here, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse

from services.applications import domain
from services.applications.forms import FormInvalid
from services.applications.handlers import transactions
from services.applications.handlers.transactions import IdempotencyKey
from services.applications.identity import IdentityRefusal, IdentityRefused
from services.applications.settings import ApplicationsSettings, load_applications_settings
from services.runtime.auth import Caller
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


IdemHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, description="Retry-safe key."),
]


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


async def answer(outcome: Awaitable[tuple[int, Any]]) -> JSONResponse:
    try:
        code, body = await outcome
    except (domain.ApplicationError, FormInvalid, IdentityRefused) as exc:
        raise http_error(exc) from exc
    return JSONResponse(body, status_code=code)


async def respond(
    ctx: ServiceContext,
    idempotency: IdempotencyKey | None,
    effect: Callable[[asyncpg.Connection], Awaitable[T]],
    render: Callable[[T], Any],
    status_code: int = status.HTTP_200_OK,
) -> JSONResponse:
    return await answer(transactions.in_transaction(ctx, idempotency, effect, render, status_code))


def idempotency_of(
    key: str | None, who: Caller, request: Request, body: Any
) -> IdempotencyKey | None:
    if key is None:
        return None
    return IdempotencyKey.of(key, who.key_scope, request.method, request.url.path, body)
