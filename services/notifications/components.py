"""The notifications service's parts for one running service, built once from its settings.

The runtime's ``ServiceContext`` knows no business words; this keeps, per context, the
notifier (settings, rules, retry policy) and the channels, so that routes, consumers and
background jobs share them. It is built on first use (the consumers are declared before the
service runs, e.g. for the AsyncAPI document, and must not need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from contracts.notifications import NotificationChannel
from services.notifications.channels import Channel, EmailChannel, WebhookChannel
from services.notifications.handlers import Notifier
from services.notifications.settings import NotificationSettings, load_notification_settings
from services.runtime.service import ServiceContext

if TYPE_CHECKING:
    from services.notifications.sender import Sender


@dataclass
class Components:
    notifier: Notifier
    channels: dict[NotificationChannel, Channel]
    http: httpx.AsyncClient
    sender: Sender | None = None
    """The running sender worker (set by the background job), for tests and benchmarks."""


def components(ctx: ServiceContext) -> Components:
    """The running service's notifier and channels, built on first use."""
    return ctx.provide(
        Components, lambda: _build(ctx.provide(NotificationSettings, load_notification_settings))
    )


def _build(settings: NotificationSettings) -> Components:
    http = httpx.AsyncClient(follow_redirects=False)
    built = Components(
        notifier=Notifier.from_settings(settings),
        channels={
            NotificationChannel.EMAIL: EmailChannel(settings),
            NotificationChannel.WEBHOOK: WebhookChannel(settings, http),
        },
        http=http,
    )
    return built


async def release(ctx: ServiceContext) -> None:
    found = ctx.provided(Components)
    if found is not None:
        await found.http.aclose()
        email = found.channels.get(NotificationChannel.EMAIL)
        if isinstance(email, EmailChannel):
            await email.aclose()
