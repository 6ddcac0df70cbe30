"""How a command runs: one transaction that loads the application, saves it with its events
and, for an HTTP command, keeps the Idempotency-Key and the response it produced; and the
refusals the handlers add to the domain's (an unknown procedure or application, a reused key)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from contracts.envelope import Envelope, Event
from services.applications.domain import Application, ApplicationError
from services.applications.store.applications import get_application, update_application
from services.applications.store.idempotency_keys import (
    StoredResponse,
    claim_idempotency_key,
    store_idempotent_response,
)
from services.runtime.outbox import add_events
from services.runtime.service import ServiceContext

T = TypeVar("T")


class UnknownProcedure(ApplicationError):
    """No procedure with that code in the catalog (HTTP 422 on procedure_code)."""


class ApplicationNotFound(ApplicationError):
    """No such application, or not one the caller may see (HTTP 404)."""


class IdempotencyKeyReused(ApplicationError):
    """The Idempotency-Key was already used with a different request (HTTP 422)."""


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key, scoped to the caller, and the hash of its request."""

    key: str
    request_hash: str

    @classmethod
    def of(cls, key: str, caller: str, method: str, path: str, body: Any) -> IdempotencyKey:
        canonical = json.dumps(
            {"method": method, "path": path, "body": body},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return cls(f"{caller}:{key}", hashlib.sha256(canonical.encode()).hexdigest())


async def in_transaction(
    ctx: ServiceContext,
    idempotency: IdempotencyKey | None,
    effect: Callable[[asyncpg.Connection], Awaitable[T]],
    render: Callable[[T], Any],
    status_code: int,
) -> tuple[int, Any]:
    """Run ``effect`` in one transaction and return (status, JSON body).

    With an Idempotency-Key, the first response is stored with the effect and replayed for the
    same key and request; the same key with another request raises ``IdempotencyKeyReused``.
    A refused request (an error) stores nothing, so the client may retry it.
    """
    async with ctx.pool.acquire() as conn, conn.transaction():
        if idempotency is not None:
            stored = await claim_idempotency_key(conn, idempotency.key, idempotency.request_hash)
            if stored is not None:
                return replay(stored, idempotency)
        body = render(await effect(conn))
        if idempotency is not None:
            await store_idempotent_response(conn, idempotency.key, status_code, body)
    return status_code, body


def replay(stored: StoredResponse, idempotency: IdempotencyKey) -> tuple[int, Any]:
    """The first response to this key, if this is the same request."""
    if stored.request_hash != idempotency.request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request"
        )
    return stored.status_code, stored.body


async def save_application(
    ctx: ServiceContext, conn: asyncpg.Connection, app: Application, events: list[Event]
) -> Application:
    await update_application(conn, app)
    await add_events(conn, [Envelope.new(e) for e in events])
    return app


async def load_application(conn: asyncpg.Connection, application_id: uuid.UUID) -> Application:
    app = await get_application(conn, application_id, for_update=True)
    if app is None:
        raise ApplicationNotFound(f"no application {application_id}")
    return app
