"""Money that needs staff, told to the finance office (会計課) on real NATS, PostgreSQL and SMTP:
a payment needing attention and a terminal transaction conflict each send one mail, once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.envelope import Envelope, Event, event_examples
from contracts.notifications import NotificationSentV1
from contracts.payments import PaymentNeedsAttentionV1, TerminalTransactionConflictV1
from contracts.subjects import PAYMENTS
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.notifications.conftest import RecordingSmtp, notification_events

pytestmark = pytest.mark.usefixtures("notify_env")

FINANCE_OFFICE = "kaikei@example.jp"

ATTENTION_SUBJECT = "【cityhall 会計】要確認の入金 300円（PR-7KQ2M9XW4T、shiminka）"
ATTENTION_LINES = [
    "理由: 期限後の入金",
    "施設: shiminka",
    "領収書番号: shiminka-2026-000124",
    "入金額: 300円（請求額 300円）",
    "支払期限: 2026年11月24日 09:30:00",
    "受信日時: 2026年11月24日 09:30:04",
    "確認待ち一覧（GET /payments/attention）",
]
CONFLICT_SUBJECT = (
    "【cityhall 会計】端末の取引IDが別の内容で再送されました（shiminka-t01 T01-000123）"
)
CONFLICT_LINES = [
    "端末 shiminka-t01（施設 shiminka）が、使用済みの取引ID T01-000123 を別の内容で",
    "台帳にある内容（計上済み）: "
    "売上 300円 QRコード / PayPay「住民票の写し」 2026年11月24日 10:15:00",
    "再送された内容（計上していません）: "
    "売上 450円 電子マネー / 交通系IC「戸籍謄本」 2026年12月01日 09:02:00",
    "cityhall dlq list --consumer payments_terminals",
]


def example(model: type[Event]) -> Envelope[Event]:
    """The event as payments publishes it, from its contract's example."""
    [fields] = event_examples(model)
    return Envelope.new(model.model_validate(fields), source="/cityhall/payments")


async def consumed_up_to(js: JetStreamContext, namespace: str, seq: int) -> None:
    """Wait until notifications' payments consumer has acked everything up to ``seq``."""

    async def acked() -> bool:
        info = await js.consumer_info(PAYMENTS.stream_name(namespace), "notifications_payments")
        return info.ack_floor.stream_seq >= seq

    await wait_for(acked)


@pytest.mark.parametrize(
    ("model", "rule", "subject", "lines"),
    [
        (PaymentNeedsAttentionV1, "payment-needs-attention", ATTENTION_SUBJECT, ATTENTION_LINES),
        (
            TerminalTransactionConflictV1,
            "terminal-transaction-conflict",
            CONFLICT_SUBJECT,
            CONFLICT_LINES,
        ),
    ],
    ids=["payment-needs-attention", "terminal-transaction-conflict"],
)
async def test_the_finance_office_is_told_once_by_mail(
    model: type[Event],
    rule: str,
    subject: str,
    lines: list[str],
    start_service: Any,
    smtp: RecordingSmtp,
    js: JetStreamContext,
    namespace: str,
    notify_env: pytest.MonkeyPatch,
) -> None:
    notify_env.setenv("NOTIFY_STAFF", json.dumps({"finance_office": [f"mailto:{FINANCE_OFFICE}"]}))
    svc = await start_service("notifications")
    env = example(model)
    await publish_envelope(js, namespace, env)

    async def sent() -> list[NotificationSentV1]:
        return [
            e
            for _, e in await notification_events(js, namespace)
            if isinstance(e, NotificationSentV1)
        ]

    [told] = await wait_for(sent)
    assert (told.rule, told.cause_event_id) == (rule, env.id)
    [mail] = smtp.messages
    assert mail["To"] == FINANCE_OFFICE
    assert str(mail["Subject"]) == subject
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    for line in lines:
        assert line in text

    # The same event again (another Nats-Msg-Id, so JetStream delivers it): nothing more.
    again = await publish_envelope(js, namespace, env, msg_id=f"{env.id}-again")
    await consumed_up_to(js, namespace, again)
    assert await svc.pool.fetchval("SELECT count(*) FROM notifications") == 1
    await asyncio.sleep(0.5)  # time for a wrong second mail to show up
    assert len(smtp.messages) == 1
    assert len(await sent()) == 1
