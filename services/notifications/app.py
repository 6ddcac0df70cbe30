"""Composition root of the notifications service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from contracts.subjects import DLQ, NOTIFICATIONS
from services.notifications import subscribers, watch
from services.notifications.api import router
from services.notifications.components import components, release
from services.notifications.sender import Sender
from services.notifications.settings import load_notification_settings
from services.notifications.subscribers import DURABLES
from services.runtime.auth import load_staff_credentials
from services.runtime.service import BusAccess, ConsumerBinding, ServiceContext, ServiceDefinition


def consumers(ctx: ServiceContext) -> Sequence[ConsumerBinding]:
    return subscribers.bindings(lambda: components(ctx).notifier)


def background(ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
    parts = components(ctx)
    sender = Sender(ctx.pool, parts.notifier, parts.channels)
    parts.sender = sender

    async def send_notifications() -> None:
        try:
            await sender.run()
        finally:
            await release(ctx)

    async def watch_dead_letters() -> None:
        await watch.watch_dead_letters(ctx.pool, ctx.js, ctx.settings.namespace, parts.notifier)

    async def keep_delivery_log_retention() -> None:
        await watch.keep_retention(ctx.pool, parts.notifier)

    return [send_notifications, watch_dead_letters, keep_delivery_log_retention]


DEFINITION = ServiceDefinition(
    name="notifications",
    package="services.notifications",
    router=router,
    consumers=consumers,
    # It watches the dead-letter stream's size to call the operators (watch.py).
    bus=BusAccess(publishes=NOTIFICATIONS, durables=DURABLES, watches=(DLQ,)),
    background=background,
    settings=(load_notification_settings, lambda: load_staff_credentials("notifications")),
    description="E-mail and webhook notifications from templates, at least once (deduplicated "
    "by Message-ID).",
)
