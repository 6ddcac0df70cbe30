"""The idempotent consumer (inbox) and the dead-letter path, on real JetStream and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from contracts import ApplicationSubmittedV1
from contracts.envelope import Envelope
from contracts.subjects import APPLICATIONS, DLQ
from services.runtime.consumer import Batched, EventConsumer
from services.runtime.dlq import DeadLetters, list_dead_letters
from services.runtime.streams import ConsumerDecl, provision_consumer
from tests.integration.helpers import (
    provision,
    publish_envelope,
    runtime_pool,
    submitted,
    wait_for,
)


async def channel_counts(reporting: Any) -> dict[str, int]:
    body: dict[str, int] = (await reporting.http.get("/kpi/applications/by-channel")).json()
    return body


async def test_the_same_event_delivered_twice_is_counted_once(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    env = submitted("online")
    # Different Nats-Msg-Ids get past JetStream's duplicate window: both copies are stored
    # and delivered; only the consumer's inbox can tell they are one event.
    await publish_envelope(js, namespace, env, msg_id="copy-1")
    await publish_envelope(js, namespace, env, msg_id="copy-2")
    await publish_envelope(js, namespace, env, msg_id="copy-3")
    later = submitted("mail")
    await publish_envelope(js, namespace, later)

    async def both_seen() -> bool:
        return (await channel_counts(reporting))["mail"] == 1

    await wait_for(both_seen)
    counts = await channel_counts(reporting)
    assert (counts["online"], counts["mail"], counts["total"]) == (1, 1, 2)
    consumer = reporting.ctx.consumers[0]
    assert consumer.stats.duplicates == 2
    inbox = await reporting.pool.fetchval("SELECT count(*) FROM inbox")
    assert inbox == 2


async def test_malformed_messages_are_dead_lettered_and_the_consumer_carries_on(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    good = submitted("counter")
    not_json = submitted()
    await publish_envelope(js, namespace, not_json, body=b"{not json")
    no_headers = submitted()
    await publish_envelope(js, namespace, no_headers, headers={"Nats-Msg-Id": "bare"})
    extra_field = submitted()
    payload = json.loads(extra_field.body()) | {"my_number": "123456789012"}
    await publish_envelope(js, namespace, extra_field, body=json.dumps(payload).encode())
    bad_channel = submitted()
    payload = json.loads(bad_channel.body()) | {"channel": "fax"}
    await publish_envelope(js, namespace, bad_channel, body=json.dumps(payload).encode())
    await publish_envelope(js, namespace, good)

    async def counted() -> bool:
        return (await channel_counts(reporting))["counter"] == 1

    await wait_for(counted)

    async def four_dead() -> list[Any]:
        letters = await list_dead_letters(js, namespace)
        return letters if len(letters) == 4 else []

    letters = await wait_for(four_dead)
    reasons = {d.headers.get("ce-id", "no ce-id"): d.reason for d in letters}
    assert "invalid event" in reasons[not_json.id]
    assert "missing CloudEvents header" in reasons["no ce-id"]
    assert "my_number: Extra inputs are not permitted" in reasons[extra_field.id]
    assert "channel: Input should be" in reasons[bad_channel.id]
    for letter in letters:
        assert letter.consumer == "reporting_applications"
        assert letter.subject == f"{namespace}.{ApplicationSubmittedV1.subject}"
        assert letter.stream == APPLICATIONS.stream_name(namespace)
        assert letter.stream_seq > 0
    assert (await channel_counts(reporting))["total"] == 1


# -- the consumer alone, with handlers that fail on purpose -----------------------------------


@pytest.fixture
async def pool(
    database_url: str, namespace: str, db: asyncpg.Connection
) -> AsyncIterator[asyncpg.Pool]:
    p = await runtime_pool(database_url, f"{namespace}_probe")
    await p.execute("CREATE TABLE seen (event_id text PRIMARY KEY)")
    yield p
    await p.close()


async def run_consumer(
    js: JetStreamContext,
    namespace: str,
    consumer: EventConsumer,
    *,
    until: Any,
    timeout: float = 15.0,
) -> None:
    """Fetch batches and hand them to the consumer until ``until()`` is true."""
    await provision_consumer(js, consumer.decl, namespace)
    sub = await js.pull_subscribe_bind(
        consumer.decl.durable, stream=APPLICATIONS.stream_name(namespace)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not await until():
            assert loop.time() < deadline, "consumer did not finish in time"
            try:
                msgs = await sub.fetch(50, timeout=0.2)
            except TimeoutError:
                continue
            await consumer.process_batch(msgs)
    finally:
        await sub.unsubscribe()


def probe_decl(max_deliver: int = 3, delivery_limit: int = 10) -> ConsumerDecl:
    return ConsumerDecl(
        durable="probe",
        stream=APPLICATIONS,
        subjects=(ApplicationSubmittedV1.subject,),
        max_deliver=max_deliver,
        delivery_limit=delivery_limit,
    )


async def test_a_handler_that_keeps_failing_is_retried_then_dead_lettered_without_blocking(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    poison = submitted()
    others = [submitted() for _ in range(5)]
    attempts: dict[str, int] = {}

    async def handler(conn: asyncpg.Connection, env: Envelope[Any]) -> None:
        attempts[env.id] = attempts.get(env.id, 0) + 1
        await conn.execute("INSERT INTO seen VALUES ($1)", env.id)
        if env.id == poison.id:
            raise ValueError("procedure JUMINHYO is not in the catalog")

    for env in [others[0], poison, *others[1:]]:
        await publish_envelope(js, namespace, env)
    consumer = EventConsumer(
        decl=probe_decl(max_deliver=3),
        handlers={ApplicationSubmittedV1: handler},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
        backoff_s=(0.05,),
    )

    async def poison_dead() -> bool:
        return consumer.stats.dead_lettered == 1

    await run_consumer(js, namespace, consumer, until=poison_dead)

    seen = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM seen")}
    assert seen == {e.id for e in others}  # the poison's effects were rolled back each time
    assert attempts[poison.id] >= 3  # once per delivery, plus once inside the first batch
    inbox = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM inbox")}
    assert poison.id not in inbox
    [letter] = await list_dead_letters(js, namespace)
    assert letter.headers["ce-id"] == poison.id
    assert letter.deliveries == 3
    assert "ValueError: procedure JUMINHYO is not in the catalog" in letter.reason
    assert json.loads(letter.body)["application_id"] == str(poison.data.application_id)  # type: ignore[attr-defined]


async def test_a_batched_handler_takes_runs_of_new_events_in_stream_order(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    first = [submitted() for _ in range(20)]
    calls: list[list[str]] = []

    async def apply(conn: asyncpg.Connection, events: Any) -> None:
        calls.append([e.id for e in events])
        await conn.executemany("INSERT INTO seen VALUES ($1)", [(e.id,) for e in events])

    for env in first:
        await publish_envelope(js, namespace, env)
    # The first event again under another Nats-Msg-Id: only the inbox can tell.
    await publish_envelope(js, namespace, first[0], msg_id="again")
    consumer = EventConsumer(
        decl=probe_decl(),
        handlers={ApplicationSubmittedV1: Batched(apply)},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
    )

    async def all_seen() -> bool:
        return consumer.stats.processed + consumer.stats.duplicates == 21

    await run_consumer(js, namespace, consumer, until=all_seen)
    assert [i for call in calls for i in call] == [e.id for e in first]  # in order, once each
    assert len(calls) < len(first), "events were handed over in runs, not one by one"
    assert consumer.stats.duplicates == 1
    assert await pool.fetchval("SELECT count(*) FROM seen") == 20


async def test_a_bad_event_in_a_batched_run_is_dead_lettered_alone(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    poison = submitted()
    others = [submitted() for _ in range(6)]

    async def apply(conn: asyncpg.Connection, events: Any) -> None:
        await conn.executemany("INSERT INTO seen VALUES ($1)", [(e.id,) for e in events])
        if any(e.id == poison.id for e in events):
            raise ValueError("not in the catalog")

    for env in [*others[:3], poison, *others[3:]]:
        await publish_envelope(js, namespace, env)
    consumer = EventConsumer(
        decl=probe_decl(max_deliver=2),
        handlers={ApplicationSubmittedV1: Batched(apply)},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
        backoff_s=(0.05,),
    )

    async def settled() -> bool:
        return consumer.stats.dead_lettered == 1 and consumer.stats.processed == 6

    await run_consumer(js, namespace, consumer, until=settled)
    seen = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM seen")}
    assert seen == {e.id for e in others}
    [letter] = await list_dead_letters(js, namespace)
    assert letter.headers["ce-id"] == poison.id
    assert "ValueError: not in the catalog" in letter.reason


async def test_transient_errors_are_retried_past_max_deliver_and_applied_once(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    await provision(js, namespace)
    env = submitted()
    failures = 4  # more than max_deliver (3): a database outage must not dead-letter events

    async def handler(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
        nonlocal failures
        await conn.execute("INSERT INTO seen VALUES ($1)", event.id)
        if failures:
            failures -= 1
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    await publish_envelope(js, namespace, env)
    consumer = EventConsumer(
        decl=probe_decl(),
        handlers={ApplicationSubmittedV1: handler},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
        backoff_s=(0.05,),
    )

    async def processed() -> bool:
        return consumer.stats.processed == 1

    await run_consumer(js, namespace, consumer, until=processed)
    assert consumer.stats.nacked == 4
    assert consumer.stats.dead_lettered == 0
    assert await pool.fetchval("SELECT count(*) FROM seen") == 1


async def test_the_poison_bound_counts_handler_failures_not_deliveries(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    """After an outage (4 transient failures: delivery 5 of a bound of 3), an event whose
    handler then fails twice (a refund before its capture) is retried, not dead-lettered:
    only its handler failures count, in consumer_failures."""
    await provision(js, namespace)
    env = submitted()
    outcomes: list[Exception | None] = [
        *(asyncpg.exceptions.ConnectionDoesNotExistError("connection lost") for _ in range(4)),
        ValueError("the capture is not posted yet"),
        ValueError("the capture is not posted yet"),
        None,
    ]

    async def handler(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
        await conn.execute("INSERT INTO seen VALUES ($1)", event.id)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    await publish_envelope(js, namespace, env)
    consumer = EventConsumer(
        decl=probe_decl(max_deliver=3),
        handlers={ApplicationSubmittedV1: handler},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
        backoff_s=(0.05,),
    )

    async def processed() -> bool:
        return consumer.stats.processed == 1

    await run_consumer(js, namespace, consumer, until=processed)
    assert consumer.stats.dead_lettered == 0
    assert await pool.fetchval("SELECT count(*) FROM seen") == 1
    row = await pool.fetchrow("SELECT failures, last_error FROM consumer_failures")
    assert (row["failures"], row["last_error"]) == (2, "ValueError: the capture is not posted yet")


async def test_a_message_redelivered_past_max_deliver_is_dead_lettered_on_arrival(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    """A consumer that crashes on a message never acks it; past the limit it goes to the DLQ."""
    await provision(js, namespace)
    env = submitted()
    await publish_envelope(js, namespace, env)
    decl = probe_decl(max_deliver=2, delivery_limit=2)
    consumer = EventConsumer(
        decl=decl,
        handlers={ApplicationSubmittedV1: lambda conn, e: asyncio.sleep(0)},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
    )
    await provision_consumer(js, decl, namespace)
    sub = await js.pull_subscribe_bind(decl.durable, stream=APPLICATIONS.stream_name(namespace))
    for _ in range(2):  # two deliveries, each "lost in a crash": neither acked nor NAKed
        [msg] = await sub.fetch(1, timeout=2)
        await msg.nak()  # stands in for the ack wait running out after a crash
    await sub.unsubscribe()

    async def dead() -> bool:
        return consumer.stats.dead_lettered == 1

    await run_consumer(js, namespace, consumer, until=dead)
    assert consumer.stats.processed == 0
    [letter] = await list_dead_letters(js, namespace, consumer="probe")
    assert "delivered 3 times" in letter.reason
    info = await js.stream_info(DLQ.stream_name(namespace))
    assert info.state.messages == 1


async def test_a_dead_letter_replayed_after_the_fix_is_applied_once_and_leaves_the_dlq(
    pool: asyncpg.Pool, js: JetStreamContext, namespace: str
) -> None:
    from services.runtime.dlq import replay_dead_letters

    await provision(js, namespace)
    poison, fine = submitted(), submitted()
    fixed = False

    async def handler(conn: asyncpg.Connection, env: Envelope[Any]) -> None:
        await conn.execute("INSERT INTO seen VALUES ($1)", env.id)
        if env.id == poison.id and not fixed:
            raise ValueError("procedure not in the catalog yet")

    consumer = EventConsumer(
        decl=probe_decl(max_deliver=1),
        handlers={ApplicationSubmittedV1: handler},
        pool=pool,
        dead_letters=DeadLetters(js, namespace),
        backoff_s=(0.05,),
    )
    for env in (poison, fine):
        await publish_envelope(js, namespace, env)

    async def poison_dead() -> bool:
        return consumer.stats.dead_lettered == 1 and consumer.stats.processed == 1

    await run_consumer(js, namespace, consumer, until=poison_dead)
    letters = await list_dead_letters(js, namespace)
    assert [d.headers["ce-id"] for d in letters] == [poison.id]

    fixed = True  # the catalog now has the procedure
    assert await replay_dead_letters(js, namespace, letters) == [letters[0].dlq_seq]
    # The other event is published again too, as a copy: the inbox must drop it.
    await publish_envelope(js, namespace, fine, msg_id="a-copy-of-fine")

    async def all_applied() -> bool:
        return consumer.stats.processed == 2 and consumer.stats.duplicates == 1

    await run_consumer(js, namespace, consumer, until=all_applied)
    seen = [r["event_id"] for r in await pool.fetch("SELECT event_id FROM seen ORDER BY 1")]
    assert sorted(seen) == sorted([poison.id, fine.id])
    assert await list_dead_letters(js, namespace) == []
