"""Projections: each batch of events applied with a few set-based statements, inside the
consumer's inbox transaction.

Each consumer has one ``Batched`` projection for every event type it takes
(``record_application_events``, ``record_payment_events``), so the runtime hands it the whole
run of new events of a fetched batch, in stream order. Dispatch in two hops:

1. ``APPLICATION_ROWS`` / ``PAYMENT_ROWS``: each event type and the function that makes its
   plain row (``rows.py``: ``Submission``, ``Step``, ``Capture``, ``Reversal``, …), which is
   also what the year-of-data generator (``bench/kpi_queries.py``) feeds
   ``apply_application_rows`` / ``apply_payment_rows`` directly;
2. ``apply_application_rows`` / ``apply_payment_rows``: each kind of row and the module that
   writes its read-model with one or two set-based statements for the whole batch (each
   module's docstring lists its tables): ``usage``, ``turnaround``, ``catalog``,
   ``payments``, ``settlements``.

The effects are those of applying the events one by one (what ``Batched`` requires):

- idempotent on the thing each event is about (application id, payment id, refund id, batch
  id), on top of the inbox's dedupe by event id: a fact re-announced under a new event id counts
  once, also when both copies are in the same batch (``DISTINCT ON`` keeps the first copy);
- bucket increments are summed per batch in SQL (``GROUP BY`` then ``ON CONFLICT DO UPDATE SET
  count = count + EXCLUDED.count``), which commutes with applying them one at a time;
- refunds and voids are replayed in stream order (``payments.py``);
- catalog facts and settlements: the newest (``occurred_at`` / event time) wins, the later in
  the stream on a tie.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import asyncpg

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationSubmittedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureOnlinedV1,
    ProcedureRegisteredV1,
    ProcedureUpdatedV1,
)
from contracts.envelope import Envelope, Event
from contracts.payments import (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    SettlementMismatchV1,
    SettlementReconciledV1,
)
from services.reporting.projections import catalog, payments, rows, settlements, turnaround, usage
from services.reporting.projections.rows import (
    ApplicationRow,
    Capture,
    PaymentRow,
    Procedure,
    Reversal,
    Settlement,
    Step,
    Submission,
)
from services.runtime.consumer import Batched

__all__ = [
    "APPLICATION_ROWS",
    "PAYMENT_ROWS",
    "ApplicationRow",
    "Capture",
    "PaymentRow",
    "Procedure",
    "Reversal",
    "Settlement",
    "Step",
    "Submission",
    "apply_application_rows",
    "apply_payment_rows",
    "record_application_events",
    "record_payment_events",
]

APPLICATION_ROWS: dict[type[Event], Callable[[Envelope[Any]], ApplicationRow]] = {
    ApplicationSubmittedV1: rows.submission,  # -> usage, turnaround
    CertificateIssuedV1: rows.step("certificate_issued"),  # -> turnaround
    ApplicationApprovedV1: rows.step("approved"),  # -> turnaround
    ApplicationRejectedV1: rows.step("rejected"),  # -> turnaround
    ApplicationWithdrawnV1: rows.step("withdrawn"),  # -> turnaround
    ProcedureRegisteredV1: rows.procedure,  # -> catalog
    ProcedureUpdatedV1: rows.procedure,  # -> catalog
    ProcedureOnlinedV1: rows.procedure,  # -> catalog
}
"""Each application event reporting projects, and the function that makes its row."""

PAYMENT_ROWS: dict[type[Event], Callable[[Envelope[Any]], PaymentRow]] = {
    PaymentCapturedV1: rows.capture,  # -> payments
    PaymentRefundedV1: rows.refund,  # -> payments
    PaymentVoidedV1: rows.void,  # -> payments
    SettlementReconciledV1: rows.reconciled,  # -> settlements
    SettlementMismatchV1: rows.mismatch,  # -> settlements
}
"""Each payment event reporting projects, and the function that makes its row."""


# -- the read-models' versions ------------------------------------------------------------------

Family = Literal["applications", "payments"]
"""The event families, each with its own version: a payment does not make the API forget its
answers about applications."""


async def bump_version(conn: asyncpg.Connection, family: Family) -> None:
    """Tell readers that the ``family``'s read-models change in this transaction: the new
    version becomes visible with the changes, at commit (the API's answers are kept per
    version, see ``answers.py``). Taken first in a batch, so the row lock is always taken
    after the inbox's and before the read-models'."""
    await conn.execute(_BUMP, family)


_BUMP = "UPDATE projection_versions SET version = version + 1 WHERE family = $1"


# -- applications: online usage, turnaround and completion, the catalog -------------------------


async def apply_application_events(
    conn: asyncpg.Connection, events: Sequence[Envelope[Any]]
) -> None:
    """Online usage rate (件数ベース), certificate turnaround (交付までの時間) and completion,
    and online procedure coverage (手続数ベース), for a run of application events."""
    await apply_application_rows(conn, [APPLICATION_ROWS[type(e.data)](e) for e in events])


record_application_events = Batched(apply_application_events)


async def apply_application_rows(conn: asyncpg.Connection, batch: Sequence[ApplicationRow]) -> None:
    if not batch:
        return
    await bump_version(conn, "applications")
    new_facts = await usage.record_submissions(conn, _of(batch, Submission))
    await turnaround.record_outcomes(conn, new_facts, _of(batch, Step))
    await catalog.record_procedures(conn, _of(batch, Procedure))


# -- payments: cashless share, revenue, settlements ---------------------------------------------


async def apply_payment_events(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """Cashless share and revenue (captures less refunds 返金 and voids 取消) and the day's
    settlements (調定), for a run of payment events."""
    await conn.execute(_LOCK_INBOX)
    await apply_payment_rows(conn, [PAYMENT_ROWS[type(e.data)](e) for e in events])


record_payment_events = Batched(apply_payment_events, keyed=True)
"""Keyed: the consumer writes no inbox row for payment events. Each is applied at most once
by its own key: a capture by its payment id (``payment_captures``), a refund or void by its
reversal id (``payment_reversals``), a settlement by its batch id, kept as of its newest
report (a copy of an older one changes nothing). That saves an inbox row per capture
(docs/benchmarks.md).

The inbox's lock is still taken first, as the inbox write did: a rebuild's swap locks the
inbox, then the read-models (rebuild.py); a transaction that locked a read-model first could
hold what the swap waits for while waiting for what the swap holds."""

_LOCK_INBOX = "LOCK TABLE inbox IN ROW EXCLUSIVE MODE"


async def apply_payment_rows(conn: asyncpg.Connection, batch: Sequence[PaymentRow]) -> None:
    if not batch:
        return
    await bump_version(conn, "payments")
    await payments.record_captures_and_reversals(
        conn, batch, _of(batch, Capture), _of(batch, Reversal)
    )
    await settlements.record_settlements(conn, _of(batch, Settlement))


R = TypeVar("R")


def _of(batch: Sequence[object], kind: type[R]) -> list[R]:
    """The rows of one kind, in stream order (each kind's module writes them as a set)."""
    return [r for r in batch if type(r) is kind]
