"""Shared helpers for integration tests (real NATS and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from nats.js import JetStreamContext

from contracts import ApplicationSubmittedV1, Channel
from contracts.envelope import Envelope, Event
from contracts.subjects import APPLICATIONS, absolute
from services.runtime import db as rdb
from services.runtime.outbox import PublishBatch, jetstream_publisher
from services.runtime.streams import subject_streams

T = TypeVar("T")


async def wait_for(
    predicate: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


def submitted(channel: str = "online", procedure: str = "JUMINHYO") -> Envelope[Event]:
    data = ApplicationSubmittedV1(
        application_id=uuid.uuid4(),
        procedure_code=procedure,
        channel=Channel(channel),
        submitted_at=datetime.now(UTC),
    )
    return Envelope.new(data, source="/cityhall/tests")


async def publish_envelope(
    js: JetStreamContext,
    namespace: str,
    env: Envelope[Any],
    *,
    msg_id: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> int:
    """Publish an event as a producer would (optionally with tampered headers or body)."""
    hdrs = env.headers()
    if msg_id is not None:
        hdrs["Nats-Msg-Id"] = msg_id
    if headers is not None:
        hdrs = headers
    ack = await js.publish(
        absolute(namespace, env.data.subject), env.body() if body is None else body, headers=hdrs
    )
    return int(ack.seq)


async def provision(js: JetStreamContext, namespace: str) -> None:
    """The operator's step (`cityhall provision`): every stream and every service's durable
    consumer, which the services themselves may not create."""
    from cityhall.provision import all_durables
    from services.runtime.streams import StreamSettings
    from services.runtime.streams import provision as provision_platform

    await provision_platform(js, StreamSettings(namespace=namespace), all_durables())


async def runtime_pool(database_url: str, schema: str) -> asyncpg.Pool:
    """A pool on a fresh schema holding the runtime's tables (outbox, inbox)."""
    pool = await rdb.create_pool(database_url, schema, min_size=1, max_size=4)
    await rdb.migrate(pool, schema, rdb.load_migrations("runtime", "services.runtime"))
    return pool


def raw_publisher(js: JetStreamContext, namespace: str) -> PublishBatch:
    """The relay's publish step as the service builds it (publish_async, PubAcks awaited
    together), on a plain nats-py connection."""

    return jetstream_publisher(js, namespace, subject_streams(namespace))


async def application_stream_ids(js: JetStreamContext, namespace: str) -> list[str]:
    """The ce-id of every message in the APPLICATIONS stream, in stream order."""
    stream = APPLICATIONS.stream_name(namespace)
    info = await js.stream_info(stream)
    ids: list[str] = []
    if info.state.messages == 0:
        return ids
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq=seq)
        assert msg.headers is not None
        ids.append(msg.headers["ce-id"])
    return ids
