"""Projections: each batch of events applied with a few set-based statements, inside the
consumer's inbox transaction.

Each consumer has one ``Batched`` projection for every event type it takes
(``record_application_events``, ``record_payment_events``), so the runtime hands it the whole
run of new events of a fetched batch, in stream order. The events are first turned into plain
rows (``Submission``, ``Capture``, ``Reversal``, …), which is also what the year-of-data
generator (``bench/kpi_queries.py``) feeds ``apply_application_rows`` / ``apply_payment_rows``
directly: one code path writes every read-model.

The effects are those of applying the events one by one (what ``Batched`` requires):

- idempotent on the thing each event is about (application id, payment id, refund id, batch
  id), on top of the inbox's dedupe by event id: a fact re-announced under a new event id counts
  once, also when both copies are in the same batch (``DISTINCT ON`` keeps the first copy);
- bucket increments are summed per batch in SQL (``GROUP BY`` then ``ON CONFLICT DO UPDATE SET
  count = count + EXCLUDED.count``), which commutes with applying them one at a time;
- refunds and voids are replayed in stream order in Python (``domain.refund`` / ``domain.void``)
  over the capture states read once per batch, so two refunds of one payment in a batch, a
  refund before its capture (it waits in ``payment_reversals``) and a capture with refunds
  waiting for it behave exactly as they would one by one; a refund above the capture raises
  ``ReversalExceedsCapture`` and the runtime retries the batch event by event, so that one
  event alone is refused. Reversals waiting for one capture are applied in order of
  (``occurred_at``, reversal id);
- catalog facts and settlements: the newest (``occurred_at`` / event time) wins, the later in
  the stream on a tie.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Literal, NamedTuple

import asyncpg

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationRejectedV1,
    ApplicationStepV1,
    ApplicationSubmittedV1,
    ApplicationWithdrawnV1,
    CertificateIssuedV1,
    ProcedureFactsV1,
)
from contracts.envelope import Envelope
from contracts.payments import (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    SettlementMismatchV1,
    SettlementReconciledV1,
)
from services.reporting import domain
from services.runtime.consumer import Batched

# Calendar buckets in Asia/Tokyo, computed by PostgreSQL (as domain.tokyo_day / tokyo_month
# do; Japan has had no daylight saving time since 1951).
_TOKYO_DAY = "(({}) AT TIME ZONE 'Asia/Tokyo')::date"
_TOKYO_MONTH = "date_trunc('month', ({}) AT TIME ZONE 'Asia/Tokyo')::date"


# -- rows: what the projections need of each event ---------------------------------------------


class Submission(NamedTuple):
    application_id: uuid.UUID
    procedure_code: str
    channel: str
    submitted_at: datetime


class Step(NamedTuple):
    application_id: uuid.UUID
    step: str  # certificate_issued, approved, rejected, withdrawn
    occurred_at: datetime


class Procedure(NamedTuple):
    procedure_code: str
    name_ja: str
    department: str
    procedure_group: int
    online_since: date | None
    planned_quarter: str | None
    sample: bool
    as_of: datetime


class Capture(NamedTuple):
    payment_id: uuid.UUID
    facility_code: str
    method: str
    brand: str  # '' when none (cash)
    amount_yen: int
    captured_at: datetime


class Reversal(NamedTuple):
    reversal_id: str  # the refund id, or 'void:<payment id>'
    payment_id: uuid.UUID
    kind: str  # refund or void
    amount_yen: int
    occurred_at: datetime


class Settlement(NamedTuple):
    batch_id: str
    facility_code: str
    business_date: date
    reconciled: bool
    gross_yen: int | None
    fee_yen: int | None
    as_of: datetime


ApplicationRow = Submission | Step | Procedure
PaymentRow = Capture | Reversal | Settlement

STEPS: dict[type[ApplicationStepV1], str] = {
    CertificateIssuedV1: "certificate_issued",
    ApplicationApprovedV1: "approved",
    ApplicationRejectedV1: "rejected",
    ApplicationWithdrawnV1: "withdrawn",
}
"""Steps after submission that turnaround and completion count (the reason of a rejection is
not kept)."""


def application_row(event: Envelope[Any]) -> ApplicationRow:
    d = event.data
    if isinstance(d, ApplicationSubmittedV1):
        return Submission(d.application_id, d.procedure_code, d.channel.value, d.submitted_at)
    if isinstance(d, ProcedureFactsV1):
        return Procedure(
            d.procedure_code,
            d.name_ja,
            d.department,
            int(d.group),
            d.online_since,
            d.planned_online_quarter,
            d.sample,
            d.occurred_at,
        )
    if isinstance(d, ApplicationStepV1) and type(d) in STEPS:
        return Step(d.application_id, STEPS[type(d)], d.occurred_at)
    raise TypeError(f"no application projection for {event.type}")


def payment_row(event: Envelope[Any]) -> PaymentRow:
    d = event.data
    if isinstance(d, PaymentCapturedV1):
        return Capture(
            d.payment_id, d.facility_code, d.method.value, d.brand or "", d.amount_yen,
            d.occurred_at,
        )  # fmt: skip
    if isinstance(d, PaymentRefundedV1):
        return Reversal(str(d.refund_id), d.payment_id, "refund", d.amount_yen, d.occurred_at)
    if isinstance(d, PaymentVoidedV1):
        return Reversal(f"void:{d.payment_id}", d.payment_id, "void", d.amount_yen, d.occurred_at)
    if isinstance(d, SettlementReconciledV1):
        return Settlement(
            d.batch_id, d.facility_code, d.business_date, True, d.gross_yen, d.fee_yen,
            event.time,
        )  # fmt: skip
    if isinstance(d, SettlementMismatchV1):
        return Settlement(
            d.batch_id, d.facility_code, d.business_date, False, None, None, event.time
        )
    raise TypeError(f"no payment projection for {event.type}")


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
    await apply_application_rows(conn, [application_row(e) for e in events])


record_application_events = Batched(apply_application_events)


async def apply_application_rows(conn: asyncpg.Connection, rows: Sequence[ApplicationRow]) -> None:
    if rows:
        await bump_version(conn, "applications")
    submissions = [r for r in rows if isinstance(r, Submission)]
    steps = [r for r in rows if isinstance(r, Step)]
    procedures = [r for r in rows if isinstance(r, Procedure)]
    if submissions or steps:
        timed = await conn.fetch(
            _SUBMISSIONS_AND_STEPS,
            [r.application_id for r in submissions],
            [r.procedure_code for r in submissions],
            [r.channel for r in submissions],
            [r.submitted_at for r in submissions],
            [r.application_id for r in steps],
            [r.step for r in steps],
            [r.occurred_at for r in steps],
        )
        if timed:
            await conn.execute(
                _TURNAROUND_PERCENTILES,
                [r["month"] for r in timed],
                [r["procedure_code"] for r in timed],
            )
    if procedures:
        await conn.execute(
            _PROCEDURES,
            [r.procedure_code for r in procedures],
            [r.name_ja for r in procedures],
            [r.department for r in procedures],
            [r.procedure_group for r in procedures],
            [r.online_since for r in procedures],
            [
                domain.fiscal_quarter_last_month(r.planned_quarter) if r.planned_quarter else None
                for r in procedures
            ],
            [r.planned_quarter for r in procedures],
            [r.sample for r in procedures],
            [r.as_of for r in procedures],
        )


_ADD_OUTCOMES = """submitted = t.submitted + EXCLUDED.submitted,
        completed = t.completed + EXCLUDED.completed, closed = t.closed + EXCLUDED.closed,
        certificates_issued = t.certificates_issued + EXCLUDED.certificates_issued"""
_ADD_TIMES = "count = h.count + EXCLUDED.count, seconds = h.seconds + EXCLUDED.seconds"

# One statement: the new submissions (usage by month, procedure and channel), the new steps
# (kept as facts, whether or not their submission is here yet), and for every application either
# touches, how its outcome changed: counted in the turnaround tables and, once it has both a
# submission and a certificate, in the histograms; each at every roll-up level (0006). Sibling
# CTEs see the tables as they were before the statement, so `steps_before` is each
# application's steps before this batch. It returns the (month, procedure) keys that got new
# times.
_SUBMISSIONS_AND_STEPS = f"""
WITH sub AS (
    SELECT DISTINCT ON (t.id) t.id, t.code, t.channel, t.at
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
         WITH ORDINALITY AS t(id, code, channel, at, n)
    ORDER BY t.id, t.n),
new_facts AS (
    INSERT INTO application_facts (application_id, procedure_code, channel, submitted_at, month)
    SELECT id, code, channel, at, {_TOKYO_MONTH.format("at")} FROM sub
    ON CONFLICT (application_id) DO NOTHING
    RETURNING application_id, procedure_code, channel, submitted_at, month),
usage AS (
    INSERT INTO applications_monthly (month, procedure_code, channel, count)
    SELECT month, procedure_code, channel, count(*) FROM new_facts
    GROUP BY month, procedure_code, channel
    ON CONFLICT (month, procedure_code, channel)
    DO UPDATE SET count = applications_monthly.count + EXCLUDED.count),
usage_wide AS (
    INSERT INTO applications_month_procedure AS u (month, procedure_code, online, counter, mail)
    SELECT month, procedure_code, count(*) FILTER (WHERE channel = 'online'),
           count(*) FILTER (WHERE channel = 'counter'), count(*) FILTER (WHERE channel = 'mail')
    FROM new_facts GROUP BY month, procedure_code
    ON CONFLICT (month, procedure_code) DO UPDATE SET online = u.online + EXCLUDED.online,
        counter = u.counter + EXCLUDED.counter, mail = u.mail + EXCLUDED.mail),
usage_procedure_totals AS (
    INSERT INTO applications_procedure_totals AS u (procedure_code, online, counter, mail)
    SELECT procedure_code, count(*) FILTER (WHERE channel = 'online'),
           count(*) FILTER (WHERE channel = 'counter'), count(*) FILTER (WHERE channel = 'mail')
    FROM new_facts GROUP BY procedure_code
    ON CONFLICT (procedure_code) DO UPDATE SET online = u.online + EXCLUDED.online,
        counter = u.counter + EXCLUDED.counter, mail = u.mail + EXCLUDED.mail),
usage_by_procedure AS (
    INSERT INTO applications_by_procedure AS u (procedure_code, channel, count)
    SELECT procedure_code, channel, count(*) FROM new_facts GROUP BY procedure_code, channel
    ON CONFLICT (procedure_code, channel) DO UPDATE SET count = u.count + EXCLUDED.count),
usage_by_month AS (
    INSERT INTO applications_by_month AS u (month, channel, count)
    SELECT month, channel, count(*) FROM new_facts GROUP BY month, channel
    ON CONFLICT (month, channel) DO UPDATE SET count = u.count + EXCLUDED.count),
st AS (
    SELECT DISTINCT ON (t.id, t.step) t.id, t.step, t.at
    FROM unnest($5::uuid[], $6::text[], $7::timestamptz[]) WITH ORDINALITY AS t(id, step, at, n)
    ORDER BY t.id, t.step, t.n),
new_steps AS (
    INSERT INTO application_steps (application_id, step, occurred_at)
    SELECT id, step, at FROM st
    ON CONFLICT (application_id, step) DO NOTHING
    RETURNING application_id, step, occurred_at),
facts AS (
    SELECT application_id, procedure_code, month, submitted_at, true AS is_new FROM new_facts
    UNION ALL
    SELECT f.application_id, f.procedure_code, f.month, f.submitted_at, false
    FROM application_facts f
    WHERE f.application_id IN (SELECT application_id FROM new_steps)),
steps_before AS (
    SELECT s.application_id, s.step, s.occurred_at FROM application_steps s
    WHERE s.application_id IN (SELECT application_id FROM facts)),
steps_after AS (
    SELECT * FROM steps_before
    UNION ALL
    SELECT * FROM new_steps WHERE application_id IN (SELECT application_id FROM facts)),
before AS (
    SELECT application_id,
           bool_or(step = 'certificate_issued') AS issued,
           bool_or(step IN ('certificate_issued', 'approved')) AS completed,
           bool_or(step IN ('rejected', 'withdrawn')) AS closed
    FROM steps_before GROUP BY application_id),
after AS (
    SELECT application_id,
           min(occurred_at) FILTER (WHERE step = 'certificate_issued') AS issued_at,
           bool_or(step IN ('certificate_issued', 'approved')) AS completed,
           bool_or(step IN ('rejected', 'withdrawn')) AS closed
    FROM steps_after GROUP BY application_id),
change AS (
    SELECT f.month, f.procedure_code,
           f.is_new::int AS submitted,
           coalesce(a.completed, false)::int
             - (NOT f.is_new AND coalesce(b.completed, false))::int AS completed,
           coalesce(a.closed AND NOT a.completed, false)::int
             - (NOT f.is_new AND coalesce(b.closed AND NOT b.completed, false))::int AS closed,
           CASE WHEN a.issued_at IS NOT NULL AND (f.is_new OR NOT coalesce(b.issued, false))
                THEN extract(epoch FROM a.issued_at - f.submitted_at) END AS seconds
    FROM facts f
    LEFT JOIN before b USING (application_id)
    LEFT JOIN after a USING (application_id)),
monthly AS (
    INSERT INTO turnaround_monthly AS t
        (month, procedure_code, submitted, completed, closed, certificates_issued)
    SELECT month, procedure_code, sum(submitted), sum(completed), sum(closed), count(seconds)
    FROM change GROUP BY month, procedure_code
    ON CONFLICT (month, procedure_code) DO UPDATE SET {_ADD_OUTCOMES}),
by_procedure AS (
    INSERT INTO turnaround_by_procedure AS t
        (procedure_code, submitted, completed, closed, certificates_issued)
    SELECT procedure_code, sum(submitted), sum(completed), sum(closed), count(seconds)
    FROM change GROUP BY procedure_code
    ON CONFLICT (procedure_code) DO UPDATE SET {_ADD_OUTCOMES}),
by_month AS (
    INSERT INTO turnaround_by_month AS t
        (month, submitted, completed, closed, certificates_issued)
    SELECT month, sum(submitted), sum(completed), sum(closed), count(seconds)
    FROM change GROUP BY month
    ON CONFLICT (month) DO UPDATE SET {_ADD_OUTCOMES}),
times AS (
    SELECT month, procedure_code, turnaround_bin(seconds) AS bin, seconds
    FROM change WHERE seconds IS NOT NULL),
histogram AS (
    INSERT INTO turnaround_histogram AS h (month, procedure_code, bin, count, seconds)
    SELECT month, procedure_code, bin, count(*), sum(seconds) FROM times
    GROUP BY month, procedure_code, bin
    ON CONFLICT (month, procedure_code, bin) DO UPDATE SET {_ADD_TIMES}),
procedure_histogram AS (
    INSERT INTO turnaround_procedure_histogram AS h (procedure_code, bin, count, seconds)
    SELECT procedure_code, bin, count(*), sum(seconds) FROM times GROUP BY procedure_code, bin
    ON CONFLICT (procedure_code, bin) DO UPDATE SET {_ADD_TIMES}),
month_histogram AS (
    INSERT INTO turnaround_month_histogram AS h (month, bin, count, seconds)
    SELECT month, bin, count(*), sum(seconds) FROM times GROUP BY month, bin
    ON CONFLICT (month, bin) DO UPDATE SET {_ADD_TIMES})
SELECT DISTINCT month, procedure_code FROM times
"""
# The keys whose times changed get their kept median and p90 again (0012), in a statement of
# their own: it must see the histograms as the statement above left them.
_TURNAROUND_PERCENTILES = "SELECT turnaround_refresh_percentiles($1::date[], $2::text[])"

# The catalog as last announced: per procedure, the newest facts of the batch (the later in
# the stream on a tie), written when not older than what is stored.
_PROCEDURES = """
INSERT INTO procedures AS p (procedure_code, name_ja, department, procedure_group, online_since,
                             planned_by_month, planned_quarter, sample, as_of)
SELECT DISTINCT ON (t.code) t.code, t.name, t.department, t.grp, t.online_since, t.planned_by,
       t.quarter, t.sample, t.as_of
FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::date[], $6::date[],
            $7::text[], $8::bool[], $9::timestamptz[])
     WITH ORDINALITY AS t(code, name, department, grp, online_since, planned_by, quarter, sample,
                          as_of, n)
ORDER BY t.code, t.as_of DESC, t.n DESC
ON CONFLICT (procedure_code) DO UPDATE SET
    name_ja = EXCLUDED.name_ja, department = EXCLUDED.department,
    procedure_group = EXCLUDED.procedure_group, online_since = EXCLUDED.online_since,
    planned_by_month = EXCLUDED.planned_by_month, planned_quarter = EXCLUDED.planned_quarter,
    sample = EXCLUDED.sample, as_of = EXCLUDED.as_of
WHERE p.as_of <= EXCLUDED.as_of
"""


# -- payments: cashless share, revenue, settlements ---------------------------------------------


async def apply_payment_events(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """Cashless share and revenue (captures less refunds 返金 and voids 取消) and the day's
    settlements (調定), for a run of payment events."""
    await conn.execute(_LOCK_INBOX)
    await apply_payment_rows(conn, [payment_row(e) for e in events])


record_payment_events = Batched(apply_payment_events, keyed=True)
"""Keyed: the consumer writes no inbox row for payment events. Each is applied at most once
by its own key: a capture by its payment id (``payment_captures``), a refund or void by its
reversal id (``payment_reversals``), a settlement by its batch id, kept as of its newest
report (a copy of an older one changes nothing). That saved a unique row per capture: 8 µs of
PostgreSQL per capture of the 330 µs the pipeline spends on one (docs/benchmarks.md).

The inbox's lock is still taken first, as the inbox write did: a rebuild's swap locks the
inbox, then the read-models (rebuild.py); a transaction that locked a read-model first could
hold what the swap waits for while waiting for what the swap holds."""

_LOCK_INBOX = "LOCK TABLE inbox IN ROW EXCLUSIVE MODE"


async def apply_payment_rows(conn: asyncpg.Connection, rows: Sequence[PaymentRow]) -> None:
    if rows:
        await bump_version(conn, "payments")
    captures = [r for r in rows if isinstance(r, Capture)]
    reversals = [r for r in rows if isinstance(r, Reversal)]
    settlements = [r for r in rows if isinstance(r, Settlement)]
    if captures or reversals:
        await _captures_and_reversals(conn, rows, captures, reversals)
    if settlements:
        await conn.execute(
            _SETTLEMENTS,
            [r.batch_id for r in settlements],
            [r.facility_code for r in settlements],
            [r.business_date for r in settlements],
            [r.reconciled for r in settlements],
            [r.gross_yen for r in settlements],
            [r.fee_yen for r in settlements],
            [r.as_of for r in settlements],
        )


BucketKey = tuple[date, str, str, str]  # day, facility, method, brand


class _Capture(NamedTuple):
    bucket: BucketKey
    state: domain.CaptureState


async def _captures_and_reversals(
    conn: asyncpg.Connection,
    rows: Sequence[PaymentRow],
    captures: Sequence[Capture],
    reversals: Sequence[Reversal],
) -> None:
    new_captures: set[uuid.UUID] = set()
    waiting: dict[uuid.UUID, list[Reversal]] = defaultdict(list)
    states: dict[uuid.UUID, _Capture] = {}
    if captures:
        for r in await conn.fetch(
            _CAPTURES,
            [c.payment_id for c in captures],
            [c.facility_code for c in captures],
            [c.method for c in captures],
            [c.brand for c in captures],
            [c.amount_yen for c in captures],
            [c.captured_at for c in captures],
            bool(reversals),
        ):
            pid = r["payment_id"]
            new_captures.add(pid)
            states[pid] = _Capture(
                (r["day"], r["facility_code"], r["method"], r["brand"]),
                domain.CaptureState(r["amount_yen"]),
            )
            if r["reversal_id"] is not None:
                waiting[pid].append(
                    Reversal(r["reversal_id"], pid, r["kind"], r["reversed_yen"], r["occurred_at"])
                )
    new_reversals: set[str] = set()
    if reversals:
        # The few rows of a batch's reversals join the captures through their index; a cached
        # generic plan (asyncpg prepares every statement) guesses otherwise and scans them.
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        for r in await conn.fetch(
            _REVERSALS,
            [x.reversal_id for x in reversals],
            [x.payment_id for x in reversals],
            [x.kind for x in reversals],
            [x.amount_yen for x in reversals],
            [x.occurred_at for x in reversals],
        ):
            new_reversals.add(r["reversal_id"])
            pid = r["payment_id"]
            if pid not in new_captures:  # new captures start from the state the batch made
                states[pid] = _Capture(
                    (r["day"], r["facility_code"], r["method"], r["brand"]),
                    domain.CaptureState(r["amount_yen"], r["refunded_yen"], r["voided"]),
                )
    if not waiting and not new_reversals:
        return  # nothing to reverse: the common case, one statement in all

    # Replay in stream order: a capture is there for a reversal once it was stored before the
    # batch or came earlier in it; until then the reversal waits for it.
    present = set(states) - new_captures
    applied: dict[str, None] = {}  # reversal ids, in order, once
    touched: set[uuid.UUID] = set()
    changes: dict[BucketKey, list[int]] = defaultdict(lambda: [0, 0])

    def reverse(rev: Reversal) -> None:
        bucket, state = states[rev.payment_id]
        if rev.kind == "void":
            after, change = domain.void(state)
        else:
            after, change = domain.refund(state, rev.amount_yen)
        states[rev.payment_id] = _Capture(bucket, after)
        applied[rev.reversal_id] = None
        touched.add(rev.payment_id)
        total = changes[bucket]
        total[0] += change.count
        total[1] += change.amount_yen

    for row in rows:
        if isinstance(row, Capture) and row.payment_id in new_captures:
            if row.payment_id not in present:
                present.add(row.payment_id)
                for rev in sorted(waiting.pop(row.payment_id, ()), key=_reversal_order):
                    reverse(rev)
        elif isinstance(row, Reversal) and row.reversal_id in new_reversals:
            new_reversals.discard(row.reversal_id)  # a second copy in the batch is a duplicate
            if row.payment_id in present:
                reverse(row)
            else:
                waiting[row.payment_id].append(row)
    if not applied:
        return
    payments = {pid: states[pid].state for pid in touched}
    await conn.execute(
        _APPLY_REVERSALS,
        list(payments),
        [s.refunded_yen for s in payments.values()],
        [s.voided for s in payments.values()],
        list(applied),
        [k[0] for k in changes],
        [k[1] for k in changes],
        [k[2] for k in changes],
        [k[3] for k in changes],
        [v[0] for v in changes.values()],
        [v[1] for v in changes.values()],
    )


def _reversal_order(rev: Reversal) -> tuple[datetime, str]:
    return (rev.occurred_at, rev.reversal_id)


_ADD_FACILITY_DAY = """count = d.count + EXCLUDED.count,
        amount_yen = d.amount_yen + EXCLUDED.amount_yen,
        cashless_count = d.cashless_count + EXCLUDED.cashless_count,
        cashless_amount_yen = d.cashless_amount_yen + EXCLUDED.cashless_amount_yen"""

# New captures (the first copy of each payment id), their buckets, and the refunds or voids
# that arrived before them (waiting in payment_reversals). With $7 (the batch has reversals of
# its own) every new capture is returned, so the replay knows where each one starts.
_CAPTURES = f"""
WITH c AS (
    SELECT DISTINCT ON (t.id) t.id, t.facility, t.method, t.brand, t.amount, t.at
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
         WITH ORDINALITY AS t(id, facility, method, brand, amount, at, n)
    ORDER BY t.id, t.n),
new AS (
    INSERT INTO payment_captures (payment_id, facility_code, method, brand, amount_yen,
                                  captured_at, day)
    SELECT id, facility, method, brand, amount, at, {_TOKYO_DAY.format("at")} FROM c
    ON CONFLICT (payment_id) DO NOTHING
    RETURNING payment_id, day, facility_code, method, brand, amount_yen),
bucket AS (
    INSERT INTO payments_daily AS d (day, facility_code, method, brand, count, amount_yen)
    SELECT day, facility_code, method, brand, count(*), sum(amount_yen) FROM new
    GROUP BY day, facility_code, method, brand
    ON CONFLICT (day, facility_code, method, brand) DO UPDATE
    SET count = d.count + EXCLUDED.count, amount_yen = d.amount_yen + EXCLUDED.amount_yen),
by_month AS (
    INSERT INTO payments_monthly AS d (month, facility_code, method, brand, count, amount_yen)
    SELECT date_trunc('month', day)::date, facility_code, method, brand, count(*),
           sum(amount_yen)
    FROM new GROUP BY 1, 2, 3, 4
    ON CONFLICT (month, facility_code, method, brand) DO UPDATE
    SET count = d.count + EXCLUDED.count, amount_yen = d.amount_yen + EXCLUDED.amount_yen),
day_totals AS (
    INSERT INTO payments_day_totals AS d (day, method, brand, count, amount_yen)
    SELECT day, method, brand, count(*), sum(amount_yen) FROM new GROUP BY day, method, brand
    ON CONFLICT (day, method, brand) DO UPDATE
    SET count = d.count + EXCLUDED.count, amount_yen = d.amount_yen + EXCLUDED.amount_yen),
facility_days AS (
    INSERT INTO payments_facility_days AS d
        (day, facility_code, count, amount_yen, cashless_count, cashless_amount_yen)
    SELECT day, facility_code, count(*), sum(amount_yen), count(*) FILTER (WHERE method <> 'cash'),
           coalesce(sum(amount_yen) FILTER (WHERE method <> 'cash'), 0)
    FROM new GROUP BY day, facility_code
    ON CONFLICT (day, facility_code) DO UPDATE
    SET {_ADD_FACILITY_DAY})
SELECT n.payment_id, n.day, n.facility_code, n.method, n.brand, n.amount_yen,
       r.reversal_id, r.kind, r.amount_yen AS reversed_yen, r.occurred_at
FROM new n LEFT JOIN payment_reversals r ON r.payment_id = n.payment_id AND NOT r.applied
WHERE r.reversal_id IS NOT NULL OR $7::bool
"""

# New refunds and voids (the first copy of each), with the state of their capture when it is
# here (stored before, or by _CAPTURES just now), locked until the batch commits.
_REVERSALS = """
WITH r AS (
    SELECT DISTINCT ON (t.id) t.id, t.payment, t.kind, t.amount, t.at
    FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::timestamptz[])
         WITH ORDINALITY AS t(id, payment, kind, amount, at, n)
    ORDER BY t.id, t.n),
new AS (
    INSERT INTO payment_reversals (reversal_id, payment_id, kind, amount_yen, occurred_at)
    SELECT id, payment, kind, amount, at FROM r
    ON CONFLICT (reversal_id) DO NOTHING
    RETURNING reversal_id, payment_id)
SELECT new.reversal_id, c.payment_id, c.day, c.facility_code, c.method, c.brand, c.amount_yen,
       c.refunded_yen, c.voided
FROM new JOIN payment_captures c USING (payment_id)
FOR UPDATE OF c
"""

# What the replay decided: each capture's state, the reversals applied, and the buckets' change
# (an UPDATE, not an upsert: the capture made the bucket, and the CHECKs on a negative
# candidate row of an INSERT would fire before ON CONFLICT is considered).
_APPLY_REVERSALS = f"""
WITH captures AS (
    UPDATE payment_captures c SET refunded_yen = u.refunded, voided = u.voided
    FROM unnest($1::uuid[], $2::bigint[], $3::bool[]) AS u(id, refunded, voided)
    WHERE c.payment_id = u.id),
reversals AS (
    UPDATE payment_reversals SET applied = true WHERE reversal_id = ANY($4::text[])),
u AS MATERIALIZED (
    SELECT * FROM unnest($5::date[], $6::text[], $7::text[], $8::text[], $9::bigint[],
                         $10::bigint[]) AS u(day, facility, method, brand, count, amount)),
daily AS (
    UPDATE payments_daily d SET count = d.count + u.count, amount_yen = d.amount_yen + u.amount
    FROM u
    WHERE d.day = u.day AND d.facility_code = u.facility AND d.method = u.method
      AND d.brand = u.brand),
by_month AS (
    UPDATE payments_monthly d SET count = d.count + u.count, amount_yen = d.amount_yen + u.amount
    FROM (SELECT date_trunc('month', day)::date AS month, facility, method, brand,
                 sum(count) AS count, sum(amount) AS amount
          FROM u GROUP BY 1, 2, 3, 4) AS u
    WHERE d.month = u.month AND d.facility_code = u.facility AND d.method = u.method
      AND d.brand = u.brand),
day_totals AS (
    UPDATE payments_day_totals d SET count = d.count + u.count, amount_yen = d.amount_yen + u.amount
    FROM (SELECT day, method, brand, sum(count) AS count, sum(amount) AS amount
          FROM u GROUP BY 1, 2, 3) AS u
    WHERE d.day = u.day AND d.method = u.method AND d.brand = u.brand)
UPDATE payments_facility_days d SET {_ADD_FACILITY_DAY.replace("EXCLUDED", "u")}
FROM (SELECT day, facility, sum(count) AS count, sum(amount) AS amount_yen,
             coalesce(sum(count) FILTER (WHERE method <> 'cash'), 0) AS cashless_count,
             coalesce(sum(amount) FILTER (WHERE method <> 'cash'), 0) AS cashless_amount_yen
      FROM u GROUP BY 1, 2) AS u
WHERE d.day = u.day AND d.facility_code = u.facility
"""

# The newest word on each settlement batch (the later in the stream on a tie) wins.
_SETTLEMENTS = """
INSERT INTO settlements AS s (batch_id, facility_code, business_date, reconciled, gross_yen,
                              fee_yen, net_yen, as_of)
SELECT DISTINCT ON (t.id) t.id, t.facility, t.day, t.reconciled, t.gross, t.fee,
       t.gross - t.fee, t.as_of
FROM unnest($1::text[], $2::text[], $3::date[], $4::bool[], $5::bigint[], $6::bigint[],
            $7::timestamptz[])
     WITH ORDINALITY AS t(id, facility, day, reconciled, gross, fee, as_of, n)
ORDER BY t.id, t.as_of DESC, t.n DESC
ON CONFLICT (batch_id) DO UPDATE SET
    reconciled = EXCLUDED.reconciled, gross_yen = EXCLUDED.gross_yen,
    fee_yen = EXCLUDED.fee_yen, net_yen = EXCLUDED.net_yen, as_of = EXCLUDED.as_of
WHERE s.as_of <= EXCLUDED.as_of
"""
