"""JetStream streams and durable consumers, declared in code and provisioned idempotently.

Streams use file storage and an explicit duplicate window; consumers are durable pull
consumers with explicit acks, a bounded number of deliveries and an ack wait long enough for
one batch. Provisioning creates what is missing and updates what differs; it is the operator's
step (`cityhall provision`), run before the services start: their own NATS identities may only
use the consumers they are given, never create or change one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from contracts.subjects import STREAMS, StreamDecl

log = logging.getLogger(__name__)

# JetStream drops a re-publish with the same Nats-Msg-Id inside this window. Two minutes
# covers a relay retry after a lost PubAck; beyond it the consumers' inbox tables dedupe.
DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class StreamSettings:
    namespace: str
    replicas: int = 1
    max_age_s: float = 0  # 0 = keep for ever: reporting rebuilds replay from the beginning


def subject_streams(
    namespace: str, decls: tuple[StreamDecl, ...] = STREAMS
) -> Callable[[str], str]:
    """subject (relative to the namespace) -> the name of the stream that captures it."""

    @functools.cache
    def stream_of(subject: str) -> str:
        for decl in decls:
            if any(subject.startswith(p.removesuffix(">")) for p in decl.subjects):
                return decl.stream_name(namespace)
        raise ValueError(f"no stream captures subject {subject!r}")

    return stream_of


def stream_config(decl: StreamDecl, settings: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=decl.stream_name(settings.namespace),
        description=decl.description,
        subjects=decl.absolute_subjects(settings.namespace),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=settings.max_age_s,
        allow_direct=True,
    )


async def provision_streams(
    js: JetStreamContext,
    settings: StreamSettings,
    decls: tuple[StreamDecl, ...] = STREAMS,
) -> list[str]:
    """Create or update every stream; return their names."""
    names = []
    for decl in decls:
        config = stream_config(decl, settings)
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream created", extra={"stream": config.name})
        else:
            await js.update_stream(config)
        names.append(config.name or "")
    return names


@dataclass(frozen=True)
class ConsumerDecl:
    """A durable pull consumer of one stream, filtered to the subjects a service handles."""

    durable: str
    stream: StreamDecl
    subjects: tuple[str, ...]
    max_deliver: int = 5
    """Handler failures (a bug, bad data) an event may have, counted by the consumer itself
    (``consumer_failures``): then the DLQ. An unavailable database is not one."""
    delivery_limit: int = 50
    """Deliveries in all: past it the message is dead-lettered on arrival. This catches a
    message that crashes its consumer every time (never acked, NAKed or counted). Outages do
    not run it down: consumers fetch nothing while the database is unavailable
    (``outage.py``), so an outage adds at most one delivery to a message in hand."""
    ack_wait_s: float = 30.0
    max_ack_pending: int = 10_000

    def config(self, namespace: str) -> ConsumerConfig:
        filters = [f"{namespace}.{s}" for s in self.subjects]
        return ConsumerConfig(
            durable_name=self.durable,
            description=f"{self.durable} on {', '.join(self.subjects)}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            # Unlimited: the runtime alone gives up on a message, always with a dead letter
            # (max_deliver, delivery_limit). A server bound would leave a message whose last
            # delivery could not be dead-lettered (the DLQ publish failed) unacked for ever.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )


class ConsumerMissing(RuntimeError):
    """A service's durable consumer does not exist: the operator has not provisioned it."""


async def require_consumer(js: JetStreamContext, decl: ConsumerDecl, namespace: str) -> None:
    """Start-up check: services never create streams or consumers (their NATS identities may
    not); a missing one stops the service with the command that makes it."""
    stream = decl.stream.stream_name(namespace)
    try:
        await js.consumer_info(stream, decl.durable)
    except NotFoundError:
        raise ConsumerMissing(
            f"durable consumer {decl.durable!r} on stream {stream!r} does not exist: run "
            f"`cityhall provision` (CITYHALL_NAMESPACE={namespace}) as the operator first"
        ) from None


async def provision(
    js: JetStreamContext, settings: StreamSettings, durables: Sequence[ConsumerDecl]
) -> list[str]:
    """The operator's step (`cityhall provision`, the Kubernetes Job): every stream, then every
    service's durable consumers. Idempotent; returns what it created or updated."""
    done = [f"stream {name}" for name in await provision_streams(js, settings)]
    for decl in durables:
        await provision_consumer(js, decl, settings.namespace)
        done.append(f"consumer {decl.stream.stream_name(settings.namespace)}/{decl.durable}")
    return done


async def provision_consumer(js: JetStreamContext, decl: ConsumerDecl, namespace: str) -> None:
    stream = decl.stream.stream_name(namespace)
    config = decl.config(namespace)
    try:
        await js.consumer_info(stream, decl.durable)
    except NotFoundError:
        await js.add_consumer(stream, config)
        log.info("consumer created", extra={"stream": stream, "consumer": decl.durable})
    else:
        # add_consumer with an existing durable name updates its editable fields.
        await js.add_consumer(stream, config)
