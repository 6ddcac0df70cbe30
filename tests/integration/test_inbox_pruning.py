"""Inbox retention: rows older than INBOX_RETENTION_DAYS go, and a copy of an event that
arrives after its row went still changes nothing where it must not (docs/reliability.md,
"Inbox retention", names the key of each consumer)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope
from services.runtime.dlq import REPLAY_FOR
from services.runtime.inbox import prune_inbox
from tests.integration.helpers import publish_envelope, submitted, wait_for

DAY_S = 86400.0


async def age_inbox(pool: Any, consumer: str, days: float) -> None:
    await pool.execute(
        "UPDATE inbox SET processed_at = now() - make_interval(days => $2) WHERE consumer = $1",
        consumer,
        days,
    )


async def test_a_copy_after_pruning_is_dropped_by_reportings_application_id(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    consumer = reporting.ctx.consumers[0]
    assert consumer.name == "reporting_applications"
    old, recent = submitted("online"), submitted("mail")
    await publish_envelope(js, namespace, old)

    async def counted(n: int) -> bool:
        return await reporting.pool.fetchval("SELECT count(*) FROM application_facts") == n

    await wait_for(lambda: counted(1))
    await age_inbox(reporting.pool, consumer.name, 31)
    await publish_envelope(js, namespace, recent)
    await wait_for(lambda: counted(2))

    assert await prune_inbox(reporting.pool, 30 * DAY_S) == 1
    ids = {r["event_id"] for r in await reporting.pool.fetch("SELECT event_id FROM inbox")}
    assert ids == {recent.id}  # the recent row is kept

    # A copy of the pruned event, as the outbox reconciliation would publish it (another
    # Nats-Msg-Id): the inbox takes it as new; application_facts' key (application_id)
    # keeps it from being counted again.
    processed = consumer.stats.processed
    await publish_envelope(js, namespace, old, msg_id=f"{old.id}:1")

    async def copy_applied() -> bool:
        return consumer.stats.processed > processed

    await wait_for(copy_applied)
    by_channel = (await reporting.http.get("/kpi/applications/by-channel")).json()
    assert (by_channel["online"], by_channel["mail"], by_channel["total"]) == (1, 1, 2)


async def test_a_replay_for_another_consumer_is_dropped_without_the_inbox(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    """A dead letter of another consumer re-driven long after this one applied the event
    (its inbox row pruned): dropped by the replay's Cityhall-Replay-For header."""
    reporting = await start_service("reporting")
    consumer = reporting.ctx.consumers[0]
    env = submitted("counter")
    await publish_envelope(js, namespace, env)

    async def counted() -> bool:
        return await reporting.pool.fetchval("SELECT count(*) FROM application_facts") == 1

    await wait_for(counted)
    await age_inbox(reporting.pool, consumer.name, 400)
    assert await prune_inbox(reporting.pool, 30 * DAY_S) == 1
    skipped = consumer.stats.skipped
    await publish_envelope(
        js,
        namespace,
        env,
        headers={
            **env.headers(),
            "Nats-Msg-Id": "replay.a-letter-of-notifications",
            REPLAY_FOR: "notifications_applications",
        },
    )

    async def dropped() -> bool:
        return consumer.stats.skipped > skipped

    await wait_for(dropped)
    assert await reporting.pool.fetchval("SELECT count(*) FROM inbox") == 0  # not even seen


async def test_a_copy_after_pruning_opens_no_second_payment_request(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    payments = await start_service("payments")
    [fees] = [c for c in payments.ctx.consumers if c.name == "payments_application_fees"]
    application = uuid.uuid4()
    requested = Envelope.new(
        ApplicationPaymentRequestedV1(
            application_id=application,
            procedure_code="JUMINHYO",
            amount_yen=300,
            fee_item="住民票の写し",
            facility_code="shiminka",
            requested_at=datetime.now(UTC),
            applicant_id=uuid.uuid4(),
        ),
        source="/cityhall/tests",
    )
    await publish_envelope(js, namespace, requested)

    async def requests() -> int:
        return int(
            await payments.pool.fetchval(
                "SELECT count(*) FROM payment_requests WHERE application_id = $1", application
            )
        )

    await wait_for(requests)
    await age_inbox(payments.pool, fees.name, 31)
    assert await prune_inbox(payments.pool, 30 * DAY_S) == 1
    processed = fees.stats.processed
    await publish_envelope(js, namespace, requested, msg_id=f"{requested.id}:1")

    async def copy_applied() -> bool:
        return fees.stats.processed > processed

    await wait_for(copy_applied)
    # payment_requests is unique on application_id (ON CONFLICT DO NOTHING): one request.
    assert await requests() == 1
    assert await payments.pool.fetchval("SELECT count(*) FROM inbox") == 1  # the copy's row


async def test_the_runtime_prunes_the_inbox_by_itself(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service(
        "reporting", inbox_retention_days=1 / DAY_S, inbox_prune_interval_s=0.2
    )
    await publish_envelope(js, namespace, submitted())

    async def applied() -> bool:
        return await reporting.pool.fetchval("SELECT count(*) FROM application_facts") == 1

    await wait_for(applied)

    async def pruned() -> bool:
        return await reporting.pool.fetchval("SELECT count(*) FROM inbox") == 0

    await wait_for(pruned, timeout=5)
    assert await reporting.pool.fetchval("SELECT count(*) FROM application_facts") == 1
