"""Subjects and streams, declared once.

Every subject here is *relative*: a deployment (or a test) prefixes it with its namespace, so
``applications.application.submitted.v1`` becomes ``cityhall.applications.application.submitted.v1``
in the default namespace. Stream names are prefixed the same way (``CITYHALL_APPLICATIONS``).
This is what lets each test run on its own streams on a shared NATS server.

A stream holds the events of one producing service: only that service publishes there.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "cityhall"


@dataclass(frozen=True)
class StreamDecl:
    """A JetStream stream: its short name and the relative subjects it captures."""

    name: str
    subjects: tuple[str, ...]
    description: str

    def stream_name(self, namespace: str) -> str:
        return f"{namespace}_{self.name}".upper().replace("-", "_").replace(".", "_")

    def absolute_subjects(self, namespace: str) -> list[str]:
        return [absolute(namespace, s) for s in self.subjects]


def absolute(namespace: str, subject: str) -> str:
    """The subject as published on the wire in ``namespace``."""
    return f"{namespace}.{subject}"


APPLICATIONS = StreamDecl(
    name="applications",
    subjects=("applications.>",),
    description="Events of the applications service: procedures, applications, certificates.",
)
PAYMENTS = StreamDecl(
    name="payments",
    subjects=("payments.>",),
    description="Events of the payments service: captures, refunds, receipts, settlements.",
)
NOTIFICATIONS = StreamDecl(
    name="notifications",
    subjects=("notifications.>",),
    description="Events of the notifications service: notifications sent or failed.",
)
TERMINALS = StreamDecl(
    name="terminals",
    subjects=("terminals.>",),
    description=(
        "Transactions published by the facilities' payment terminals and POS registers, each on "
        "its own subject terminals.<facility>.<terminal>.tx.v1; consumed by payments."
    ),
)
DLQ = StreamDecl(
    name="dlq",
    subjects=("dlq.>",),
    description=(
        "Dead letters: messages a consumer could not process, with the reason, the original "
        "subject and the original headers. Subject: dlq.<consumer>."
    ),
)

STREAMS: tuple[StreamDecl, ...] = (APPLICATIONS, PAYMENTS, NOTIFICATIONS, TERMINALS, DLQ)


def dlq_subject(consumer: str) -> str:
    """Relative subject where ``consumer``'s dead letters go."""
    return f"dlq.{consumer}"
