"""The dead-letter path: a message a consumer cannot process goes to the DLQ stream, with why.

A dead letter keeps the original body and headers and adds ``Cityhall-Dlq-*`` headers: the
reason, the consumer, the original subject, stream and sequence, and how many times it was
delivered. Its ``Nats-Msg-Id`` is derived from the original stream sequence, so dead-lettering
the same message twice (a crash after the DLQ publish, before the term) stores it once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.envelope import NATS_MSG_ID
from contracts.subjects import DLQ, absolute, dlq_subject

REASON = "Cityhall-Dlq-Reason"
CONSUMER = "Cityhall-Dlq-Consumer"
ORIGINAL_SUBJECT = "Cityhall-Dlq-Subject"
ORIGINAL_STREAM = "Cityhall-Dlq-Stream"
ORIGINAL_SEQ = "Cityhall-Dlq-Stream-Seq"
DELIVERIES = "Cityhall-Dlq-Deliveries"
DEAD_AT = "Cityhall-Dlq-Time"
REPLAY_FOR = "Cityhall-Replay-For"
"""On a re-driven dead letter: the one consumer it is for (the one that dead-lettered it).
The other consumers of its subject ack it unseen: they had applied the event long ago, and
their inbox rows may have been pruned since (docs/reliability.md, "Inbox retention")."""

_UNSAFE = re.compile(r"[\r\n\x00]+")


def _header_value(text: str, limit: int = 1000) -> str:
    text = _UNSAFE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DeadLetters:
    """Publishes dead letters for one namespace."""

    def __init__(self, js: JetStreamContext, namespace: str) -> None:
        self._js = js
        self._namespace = namespace
        self.stream = DLQ.stream_name(namespace)

    async def send(
        self, msg: Msg, consumer: str, reason: str, *, body: bytes | None = None
    ) -> None:
        """Store ``msg`` in the DLQ (with ``body`` instead of its own when given, e.g. with a
        card number masked); raises if JetStream did not acknowledge it."""
        meta = msg.metadata
        headers = {k: v for k, v in (msg.headers or {}).items() if k != NATS_MSG_ID}
        headers.update(
            {
                REASON: _header_value(reason),
                CONSUMER: consumer,
                ORIGINAL_SUBJECT: msg.subject,
                ORIGINAL_STREAM: meta.stream,
                ORIGINAL_SEQ: str(meta.sequence.stream),
                DELIVERIES: str(meta.num_delivered),
                DEAD_AT: datetime.now(UTC).isoformat(),
                NATS_MSG_ID: f"dlq.{consumer}.{meta.stream}.{meta.sequence.stream}",
            }
        )
        await self._js.publish(
            absolute(self._namespace, dlq_subject(consumer)),
            msg.data if body is None else body,
            headers=headers,
            stream=self.stream,
        )

    async def erase(self, stream: str, seq: int) -> None:
        """Overwrite and remove one message from its stream (data that must not be kept)."""
        await self._js.delete_msg(stream, seq)


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter read back from the DLQ stream."""

    dlq_seq: int
    consumer: str
    reason: str
    subject: str
    stream: str
    stream_seq: int
    deliveries: int
    dead_at: str
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_message(cls, seq: int, headers: Mapping[str, str], body: bytes) -> DeadLetter:
        return cls(
            dlq_seq=seq,
            consumer=headers.get(CONSUMER, ""),
            reason=headers.get(REASON, ""),
            subject=headers.get(ORIGINAL_SUBJECT, ""),
            stream=headers.get(ORIGINAL_STREAM, ""),
            stream_seq=int(headers.get(ORIGINAL_SEQ, "0") or 0),
            deliveries=int(headers.get(DELIVERIES, "0") or 0),
            dead_at=headers.get(DEAD_AT, ""),
            headers={k: v for k, v in headers.items() if not k.startswith("Cityhall-Dlq-")},
            body=body,
        )


async def list_dead_letters(
    js: JetStreamContext, namespace: str, limit: int = 100, consumer: str | None = None
) -> list[DeadLetter]:
    """The newest ``limit`` dead letters (optionally of one consumer), oldest first."""
    from nats.js.errors import NotFoundError

    stream = DLQ.stream_name(namespace)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    first, last = info.state.first_seq, info.state.last_seq
    letters: list[DeadLetter] = []
    subject = absolute(namespace, dlq_subject(consumer)) if consumer else None
    seq = last
    while seq >= first and seq > 0 and len(letters) < limit:
        try:
            raw = await js.get_msg(stream, seq=seq, direct=True)
        except NotFoundError:
            seq -= 1
            continue
        if subject is None or raw.subject == subject:
            letters.append(DeadLetter.from_message(seq, raw.headers or {}, raw.data or b""))
        seq -= 1
    letters.reverse()
    return letters


async def replay_dead_letters(
    js: JetStreamContext, namespace: str, letters: list[DeadLetter]
) -> list[int]:
    """Re-drive dead letters after a fix: publish each original message again on its original
    subject, then remove it from the DLQ. Returns the DLQ sequences replayed.

    The replay keeps the CloudEvents id and names the consumer it is for (``REPLAY_FOR``):
    the other consumers of the subject drop it unseen, whatever the age of the letter (their
    inbox would too while it keeps the event's id); only the consumer that had failed it
    applies it now (its own inbox still drops a copy it applied). The ``Nats-Msg-Id``
    is derived from the dead letter, so replaying the same letter twice inside the duplicate
    window publishes it once. A letter that fails again comes back to the DLQ with a new reason.
    """
    replayed: list[int] = []
    stream = DLQ.stream_name(namespace)
    for letter in letters:
        if not letter.subject:
            continue
        # Nats-Expected-Stream came with the DLQ publish: it names the DLQ, not the original.
        headers = {k: v for k, v in letter.headers.items() if not k.startswith("Nats-Expected")}
        headers[NATS_MSG_ID] = f"replay.{letter.stream}.{letter.stream_seq}.{letter.dlq_seq}"
        if letter.consumer:
            headers[REPLAY_FOR] = letter.consumer
        await js.publish(letter.subject, letter.body, headers=headers)
        await js.delete_msg(stream, letter.dlq_seq)
        replayed.append(letter.dlq_seq)
    return replayed
