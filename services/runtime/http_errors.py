"""The error answers every service's HTTP API can give, declared once for its OpenAPI.

FastAPI declares only 200 and its own 422 unless told more, so clients (and schemathesis in
``tests/security/test_openapi_schemathesis.py``) would meet answers the document does not
list. Each service's router passes ``responses=ERROR_RESPONSES``: the body is always
``{"detail": ...}``: a message, a named error (payments), or FastAPI's list of validation
errors for a 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field


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
