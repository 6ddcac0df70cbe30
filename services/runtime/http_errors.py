"""The error answers every service's HTTP API can give, declared once for its OpenAPI.

FastAPI declares only 200 and its own 422 unless told more, so clients (and schemathesis in
``tests/security/test_openapi_schemathesis.py``) would meet answers the document does not
list. Each service's router passes ``responses=ERROR_RESPONSES``: the body is always
``{"detail": ...}``: a message, a named error (payments), or FastAPI's list of validation
errors for a 422. ``database_unavailable`` turns the errors of a database that is down or
restarting (``DATABASE_UNAVAILABLE``) into a 503 with Retry-After instead of a 500.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import asyncpg
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One invalid part of a request, as FastAPI reports it."""

    loc: list[str | int]
    msg: str
    type: str


class NamedError(BaseModel):
    """A refusal named by its error type (payments: ``RefundExceedsCapture``, ...)."""

    error: str
    message: str


class ErrorBody(BaseModel):
    """Why a request was refused."""

    detail: str | NamedError | list[FieldError] = Field(
        description="A message, a named error, or (422) one entry per invalid part of the request."
    )


def _error(description: str) -> dict[str, Any]:
    # JSON even on a route whose own answer is HTML or CSV (a receipt, a report).
    json_body = {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": json_body},
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("No credential, or one that is not valid (staff token or applicant JWT)."),
    403: _error("Valid credential, but not allowed here (a staff endpoint, another's data)."),
    404: _error("No such object (or not one the caller may see)."),
    409: _error("Refused by the rules in the object's current state."),
    413: _error("Request body over the service's limit."),
    422: _error("The request does not validate."),
    429: _error("Rate limit of this caller reached; see Retry-After."),
    503: _error("Database unavailable or a required setting missing; see Retry-After."),
}


async def no_nul_characters(request: Request) -> None:
    """Refuse (422) a query or path parameter holding NUL: PostgreSQL cannot store or compare
    it, so it would reach the database only to fail there as a 500. (An ``async def``: FastAPI
    runs a plain ``def`` dependency in a worker thread, two thread hops per request.)"""
    values = [*request.query_params.multi_items(), *request.path_params.items()]
    for name, value in values:
        if isinstance(value, str) and "\x00" in value:
            raise HTTPException(422, f"{name}: the NUL character is not allowed")


DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # the connection broke, or could not be made
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, crashed
    asyncpg.InterfaceError,  # "connection is closed"
    OSError,  # no socket to connect to (ConnectionRefusedError, FileNotFoundError)
)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is down or restarting: 503 with Retry-After, not a 500. Nothing of the
    request was committed (a commit that fails is not acknowledged), so the client may try
    again, with the same Idempotency-Key where the route takes one."""
    if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) and not any(
        "asyncpg" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)
    ):
        raise exc  # an OSError of something else: a plain 500
    log.warning(
        "database unavailable; answered 503",
        extra={"path": request.url.path, "error": type(exc).__name__},
    )
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )
