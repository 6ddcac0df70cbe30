"""HTTP routes of the notifications service: parse, call a handler, map errors to HTTP.

Contacts (連絡先) by pseudonymous applicant id; the operators' list of failed and dead
notifications; rules; templates with versions, validation on save and a preview.

Who may call (``services.runtime.auth``): a contact (an e-mail address and phone number:
personal data) is its applicant's, signed in with the login gateway's token, or staff's
(``NOTIFICATIONS_STAFF_TOKENS``) recording it on the citizen's behalf; everything else is for
operators (staff) only.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict

from contracts.notifications import NotificationChannel
from services.notifications import deliveries, handlers, operators, store, templates
from services.notifications.components import Components, components
from services.notifications.deliveries import DeliveryFilter
from services.notifications.domain import (
    Contact,
    Language,
    NotificationKind,
    NotificationStatus,
    ResendRefused,
    Rule,
    mask_address,
)
from services.notifications.templates import TemplateError, TemplateParts, UnknownTemplate
from services.notifications.views import DeliveryPage, DeliveryView, ResendAnswer, ResendView
from services.runtime.auth import Caller, Staff, Who, caller
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters
from services.runtime.service import ServiceContext, service_context

router = APIRouter(
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route identifies its caller and counts it against the caller's rate limit."""
Ctx = Annotated[ServiceContext, Depends(service_context)]


def _own_contact(who: Caller, applicant_id: uuid.UUID) -> None:
    """404 unless the caller is that applicant or staff: the same answer as no contact."""
    if not who.may_see(applicant_id):
        if who.applicant_id is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "sign in (applicant token) or a staff credential required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no contact for {applicant_id}")


def _components(ctx: Ctx) -> Components:
    return components(ctx)


Parts = Annotated[Components, Depends(_components)]


@contextlib.contextmanager
def http_errors(where: tuple[str, ...] = ("body",)) -> Iterator[None]:
    """The one place where the service's errors become HTTP answers."""
    try:
        yield
    except TemplateError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": [*where, *exc.field.split(".")], "msg": exc.message, "type": "template"}],
        ) from exc
    except UnknownTemplate as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no template {exc.args[0]!r}") from exc
    except operators.NotificationNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ResendRefused as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, {"error": exc.error, "message": str(exc)}
        ) from exc


# -- contacts ---------------------------------------------------------------------------------


@router.put("/contacts/{applicant_id}", response_model=Contact, tags=["contacts"])
async def put_contact(applicant_id: uuid.UUID, contact: Contact, ctx: Ctx, who: Who) -> Contact:
    """Record how to reach an applicant: e-mail, optional phone, language, opt-outs by kind."""
    if not who.may_see(applicant_id) and who.applicant_id is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only your own contact")
    _own_contact(who, applicant_id)
    await handlers.put_contact(ctx.pool, applicant_id, contact)
    return contact


@router.get("/contacts/{applicant_id}", response_model=Contact, tags=["contacts"])
async def get_contact(applicant_id: uuid.UUID, ctx: Ctx, who: Who) -> Contact:
    _own_contact(who, applicant_id)
    contact = await store.get_contact(ctx.pool, applicant_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no contact for {applicant_id}")
    return contact


@router.delete(
    "/contacts/{applicant_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["contacts"]
)
async def delete_contact(applicant_id: uuid.UUID, ctx: Ctx, who: Who) -> Response:
    _own_contact(who, applicant_id)
    if not await store.delete_contact(ctx.pool, applicant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no contact for {applicant_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- notifications (operators) ----------------------------------------------------------------


class NotificationView(BaseModel):
    """A notification as operators see it: the address masked."""

    id: uuid.UUID
    cause_event_id: str
    rule: str
    recipient_kind: str
    channel: str
    address: str
    status: NotificationStatus
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime

    @classmethod
    def of(cls, row: store.NotificationRow) -> NotificationView:
        values: dict[str, Any] = dict(row.__dict__)
        values["address"] = mask_address(row.address)
        return cls(**values)


@router.get("/notifications", response_model=list[NotificationView], tags=["operators"])
async def list_notifications(
    ctx: Ctx,
    _staff: Staff,
    status_: Annotated[list[NotificationStatus] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[NotificationView]:
    """Failed (to be retried) and dead notifications, newest first, unless ``status`` says."""
    statuses = status_ or [NotificationStatus.FAILED, NotificationStatus.DEAD]
    rows = await store.list_notifications(ctx.pool, statuses, limit)
    return [NotificationView.of(r) for r in rows]


MAX_OFFSET = 1_000_000
Kind = Annotated[NotificationKind | None, Query(description="What it is about (the rule's kind).")]
ChannelQuery = Annotated[NotificationChannel | None, Query(description="email or webhook")]


def _utc(value: datetime | None) -> datetime | None:
    """A time PostgreSQL can hold: 0001-01-01T00:00+14:00 has no UTC date (422, not a 500)."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


Since = Annotated[
    AwareDatetime | None,
    AfterValidator(_utc),
    Query(description="Only those tried, given up or resent at or after this (with offset)."),
]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


async def _page(
    ctx: ServiceContext,
    parts: Components,
    statuses: tuple[NotificationStatus, ...],
    filters: tuple[NotificationKind | None, NotificationChannel | None, datetime | None],
    limit: int,
    offset: int,
) -> DeliveryPage:
    kind, channel, since = filters
    found, total = await operators.list_deliveries(
        ctx.pool,
        parts.notifier,
        DeliveryFilter(statuses, channel=channel, since=since),
        kind,
        limit=limit,
        offset=offset,
    )
    items = [DeliveryView.of(d, operators.rule_of(parts.notifier, d.rule)) for d in found]
    return DeliveryPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/notifications/failed", response_model=DeliveryPage, tags=["operators"])
async def list_failed(
    ctx: Ctx,
    parts: Parts,
    _staff: Staff,
    kind: Kind = None,
    channel: ChannelQuery = None,
    since: Since = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> DeliveryPage:
    """Deliveries that failed for good (dead), newest first, with the last failure's reason:
    what to fix before ``POST /notifications/{id}/resend``."""
    filters = (kind, channel, since)
    return await _page(ctx, parts, operators.FAILED, filters, limit, offset)


@router.get("/notifications/pending", response_model=DeliveryPage, tags=["operators"])
async def list_pending(
    ctx: Ctx,
    parts: Parts,
    _staff: Staff,
    kind: Kind = None,
    channel: ChannelQuery = None,
    since: Since = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> DeliveryPage:
    """Deliveries not done yet, the next attempt first: ``failed`` ones wait for a retry (the
    reason of the last attempt shown), ``pending`` ones for their first attempt (or a resend)."""
    filters = (kind, channel, since)
    return await _page(ctx, parts, operators.PENDING, filters, limit, offset)


@router.post(
    "/notifications/{notification_id}/resend",
    response_model=ResendAnswer,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["operators"],
)
async def resend_notification(
    notification_id: uuid.UUID, ctx: Ctx, parts: Parts, staff: Staff
) -> ResendAnswer:
    """Send a dead notification again, to the recipient's current address, with a fresh set
    of retries (202: the sender has it). 409 when it is already delivered, already being
    resent or waiting for a retry, or has no current address; the ``error`` says which."""
    with http_errors():
        done = await operators.resend(
            ctx.pool, parts.notifier, notification_id, staff.staff_id or "?"
        )
    rule = operators.rule_of(parts.notifier, done.delivery.rule)
    return ResendAnswer(
        notification=DeliveryView.of(done.delivery, rule), resend=ResendView.of(done.resend)
    )


@router.get(
    "/notifications/{notification_id}/resends",
    response_model=list[ResendView],
    tags=["operators"],
)
async def list_resends(notification_id: uuid.UUID, ctx: Ctx, _staff: Staff) -> list[ResendView]:
    """Who asked to send it again, when, and to which address (masked), newest first."""
    if await store.get_notification(ctx.pool, notification_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no notification {notification_id}")
    return [ResendView.of(r) for r in await deliveries.resends_of(ctx.pool, notification_id)]


@router.get("/notifications/{notification_id}", response_model=NotificationView, tags=["operators"])
async def get_notification(notification_id: uuid.UUID, ctx: Ctx, _staff: Staff) -> NotificationView:
    row = await store.get_notification(ctx.pool, notification_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no notification {notification_id}")
    return NotificationView.of(row)


@router.get("/rules", response_model=list[Rule], tags=["rules"])
async def list_rules(parts: Parts, _staff: Staff) -> list[Rule]:
    """The rules in force (from NOTIFY_RULES_FILE)."""
    return list(parts.notifier.rules.rules)


# -- templates --------------------------------------------------------------------------------


class TemplateView(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    language: Language
    event: str
    version: int
    """0 is the shipped file; saved versions count from 1; the highest is active."""
    parts: TemplateParts


class Preview(BaseModel):
    subject: str
    text: str
    html: str
    example: dict[str, Any]


@router.get("/templates/{name}/{language}", response_model=TemplateView, tags=["templates"])
async def get_template(
    name: str, language: Language, ctx: Ctx, parts: Parts, _staff: Staff
) -> TemplateView:
    with http_errors():
        event = handlers.template_event(parts.notifier, name)
        version, content = await handlers.template_for(ctx.pool, name, language)
    return TemplateView(name=name, language=language, event=event, version=version, parts=content)


@router.put("/templates/{name}/{language}", response_model=TemplateView, tags=["templates"])
async def save_template(
    name: str, language: Language, content: TemplateParts, ctx: Ctx, parts: Parts, _staff: Staff
) -> TemplateView:
    """Save a new version (it becomes the active one). A variable the event does not provide
    is refused with 422 naming it."""
    with http_errors():
        event = handlers.template_event(parts.notifier, name)
        async with ctx.pool.acquire() as conn:
            version = await handlers.save_template(conn, parts.notifier, name, language, content)
    return TemplateView(name=name, language=language, event=event, version=version, parts=content)


@router.post("/templates/{name}/{language}/preview", response_model=Preview, tags=["templates"])
async def preview_template(
    name: str,
    language: Language,
    ctx: Ctx,
    parts: Parts,
    _staff: Staff,
    draft: Annotated[TemplateParts | None, Body()] = None,
) -> Preview:
    """Render the active version (or a draft sent as the body) with the event's example."""
    with http_errors():
        event = handlers.template_event(parts.notifier, name)
        if draft is None:
            _, content = await handlers.template_for(ctx.pool, name, language)
        else:
            templates.check(event, draft, language.value)
            content = draft
        example = templates.example_fields(event)
        rendered = templates.render(
            content,
            templates.context_for(
                example,
                event_id="00000000-0000-4000-8000-000000000000",
                event_time=datetime.fromisoformat("2026-11-24T09:00:00+09:00"),
                language=language,
                portal_url=parts.notifier.settings.portal_url,
            ),
        )
    return Preview(
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        example={k: str(v) if v is not None else None for k, v in example.items()},
    )
