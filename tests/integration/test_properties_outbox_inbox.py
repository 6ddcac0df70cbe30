"""Property test of the outbox and the inbox together, on real JetStream and PostgreSQL.

Hypothesis interleaves, in random order: transactions that write events to the outbox (some
roll back), relay rounds whose PubAcks are lost for some rows (JetStream stored them; the relay
does not know and publishes them again), a relay that dies after the PubAck and before marking
its rows, copies of published events under other ``Nats-Msg-Id``s (past the duplicate window:
only the inbox can tell), and consumer rounds whose handler fails for some events a few times
(NAKed, redelivered, retried in halves). Then the relay drains and the consumer catches up.

Whatever the order:

* every committed event's effect is applied exactly once; a rolled-back one never;
* every outbox row is marked published with its stream sequence, and the stream holds exactly
  one message under each event's ``Nats-Msg-Id`` (plus the deliberate copies, no more);
* the inbox holds each event once.

The runtime's own code does the work (``add_events``, ``OutboxRelay``, ``jetstream_publisher``,
``EventConsumer``); each example has its own namespace (streams) and schema.
``HYPOTHESIS_PROFILE=soak`` runs more examples.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext

from contracts import ApplicationSubmittedV1
from contracts.envelope import Envelope, Event
from contracts.subjects import APPLICATIONS
from services.runtime.consumer import Batched, EventConsumer
from services.runtime.dlq import DeadLetters
from services.runtime.outbox import OutboxRelay, OutboxRow, PublishBatch, add_events
from services.runtime.streams import ConsumerDecl, provision_consumer
from tests.integration.helpers import (
    provision,
    publish_envelope,
    raw_publisher,
    runtime_pool,
    submitted,
)

settings.register_profile(
    "outbox-inbox-ci",
    max_examples=12,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # Each example costs streams, a schema and real deliveries: no shrinking in CI (the
    # failing example is reported as drawn); the soak profile shrinks.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.register_profile(
    "outbox-inbox-soak",
    parent=settings.get_profile("outbox-inbox-ci"),
    max_examples=150,
    phases=list(Phase),
)
PROFILE = settings.get_profile(
    "outbox-inbox-soak" if os.environ.get("HYPOTHESIS_PROFILE") == "soak" else "outbox-inbox-ci"
)

ACTIONS = st.sampled_from(["commit", "commit", "rollback", "relay", "crash", "copy", "consume"])


class LosingPubAcks:
    """The relay's publisher, losing the PubAck of the rows hypothesis picks (the message is
    stored; the relay sees a timeout and keeps the row for the next round)."""

    def __init__(self, publish: PublishBatch) -> None:
        self._publish = publish
        self.lose: set[str] = set()

    async def __call__(self, rows: Sequence[OutboxRow]) -> list[int | BaseException]:
        results = await self._publish(rows)
        lost = self.lose
        self.lose = set()
        return [
            TimeoutError("PubAck lost") if row.event_id in lost else result
            for row, result in zip(rows, results, strict=True)
        ]


async def stream_msg_ids(js: JetStreamContext, namespace: str) -> list[str]:
    stream = APPLICATIONS.stream_name(namespace)
    info = await js.stream_info(stream)
    ids = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            assert msg.headers is not None
            ids.append(msg.headers["Nats-Msg-Id"])
    return ids


examples = itertools.count()


@PROFILE
@given(data=st.data())
async def test_every_event_is_published_once_and_applied_once_whatever_the_interleaving(
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    data: st.DataObject,
) -> None:
    ns = f"{namespace}_x{next(examples)}"  # removed with the test's namespace (nc fixture)
    await provision(js, ns)
    pool = await runtime_pool(database_url, f"{ns}_probe")
    await pool.execute("CREATE TABLE effects (event_id text NOT NULL)")  # no key: counts copies
    try:
        publisher = LosingPubAcks(raw_publisher(js, ns))
        relay = OutboxRelay(pool, f"{ns}_probe", publisher, batch_size=4, poll_interval_s=0.01)
        failures: Counter[str] = Counter()  # handler calls left to fail, per event

        async def effect(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
            for event in events:
                if failures[event.id] > 0:
                    failures[event.id] -= 1
                    raise ValueError(f"handler fails on {event.id} (on purpose)")
            await conn.executemany(
                "INSERT INTO effects VALUES ($1)", [(event.id,) for event in events]
            )

        async def one_by_one(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
            await effect(conn, [event])

        batched = data.draw(st.booleans(), label="batched handler")
        decl = ConsumerDecl(
            durable="probe",
            stream=APPLICATIONS,
            subjects=(ApplicationSubmittedV1.subject,),
            max_deliver=20,  # failures here are few; none may be dead-lettered
        )
        consumer = EventConsumer(
            decl=decl,
            handlers={ApplicationSubmittedV1: Batched(effect) if batched else one_by_one},
            pool=pool,
            dead_letters=DeadLetters(js, ns),
            backoff_s=(0.01,),
        )
        await provision_consumer(js, decl, ns)
        sub = await js.pull_subscribe_bind("probe", stream=APPLICATIONS.stream_name(ns))

        async def consume_once(timeout: float = 0.05) -> None:
            try:
                msgs = await sub.fetch(8, timeout=timeout)
            except TimeoutError:
                return
            await consumer.process_batch(msgs)

        committed: list[Envelope[Event]] = []
        rolled_back: list[Envelope[Event]] = []
        copies = 0
        for _ in range(data.draw(st.integers(3, 12), label="steps")):
            action = data.draw(ACTIONS, label="action")
            if action in ("commit", "rollback"):
                events = [submitted() for _ in range(data.draw(st.integers(1, 3), label="n"))]
                for env in events:
                    failures[env.id] = data.draw(st.integers(0, 2), label="handler failures")
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await add_events(conn, events)
                        if action == "rollback":
                            raise RuntimeError("the state change failed")
                except RuntimeError:
                    rolled_back.extend(events)
                else:
                    committed.extend(events)
            elif action == "relay":
                unpublished = [
                    r["event_id"]
                    for r in await pool.fetch(
                        "SELECT event_id::text FROM outbox WHERE published_at IS NULL"
                    )
                ]
                if unpublished:
                    publisher.lose = set(
                        data.draw(st.lists(st.sampled_from(unpublished)), label="PubAcks lost")
                    )
                await relay.drain_once()
            elif action == "crash" and committed:
                # The relay died after the PubAck, before marking: the rows go out again.
                victims = data.draw(st.lists(st.sampled_from(committed), max_size=3), label="re")
                await pool.execute(
                    "UPDATE outbox SET published_at = NULL WHERE event_id = ANY($1::uuid[])",
                    [env.id for env in victims],
                )
            elif action == "copy" and committed:
                env = data.draw(st.sampled_from(committed), label="copied")
                copies += 1
                await publish_envelope(js, ns, env, msg_id=f"copy-{copies}-{env.id}")
            elif action == "consume":
                await consume_once()

        # Everything settles: the relay drains, the consumer catches up.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while await relay.pending():
            assert loop.time() < deadline, "the outbox did not drain"
            await relay.drain_once()
        wanted = {env.id for env in committed}
        while True:
            applied = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM effects")}
            info = await js.consumer_info(APPLICATIONS.stream_name(ns), "probe")
            if applied == wanted and info.num_pending == 0 and info.num_ack_pending == 0:
                break  # every message, copies included, was delivered and acknowledged
            assert loop.time() < deadline, f"not applied: {wanted - applied}"
            await consume_once(timeout=0.2)
        await sub.unsubscribe()

        counts = Counter(r["event_id"] for r in await pool.fetch("SELECT event_id FROM effects"))
        assert set(counts) == wanted
        assert set(counts.values()) <= {1}, f"applied more than once: {+counts}"
        assert not {env.id for env in rolled_back} & set(counts)
        inbox = Counter(r["event_id"] for r in await pool.fetch("SELECT event_id FROM inbox"))
        assert inbox == Counter(wanted)
        assert consumer.stats.dead_lettered == 0

        rows = await pool.fetch("SELECT event_id::text, published_at, stream_seq FROM outbox")
        assert {r["event_id"] for r in rows} == wanted
        assert all(r["published_at"] is not None and r["stream_seq"] for r in rows)
        msg_ids = Counter(await stream_msg_ids(js, ns))
        assert {i: n for i, n in msg_ids.items() if not i.startswith("copy-")} == Counter(wanted)
        assert sum(n for i, n in msg_ids.items() if i.startswith("copy-")) == copies
        seq_of = {r["event_id"]: r["stream_seq"] for r in rows}
        stream = APPLICATIONS.stream_name(ns)
        for event_id, seq in seq_of.items():  # the recorded sequence is the event's message
            msg = await js.get_msg(stream, seq=seq)
            assert msg.headers is not None
            assert msg.headers["Nats-Msg-Id"] == event_id
    finally:
        await pool.close()
