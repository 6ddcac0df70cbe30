"""Cashless share and revenue: captures (決済) less refunds (返金) and voids (取消), per
day, facility, method and brand at every roll-up level.

Refunds and voids are replayed in stream order in Python (``domain.refund`` / ``domain.void``)
over the capture states read once per batch, so two refunds of one payment in a batch, a refund
before its capture (it waits in ``payment_reversals``) and a capture with refunds waiting for
it behave exactly as they would one by one; a refund above the capture raises
``ReversalExceedsCapture`` and the runtime retries the batch event by event, so that one event
alone is refused. Reversals waiting for one capture are applied in order of (``occurred_at``,
reversal id).

Writes ``payment_captures``, ``payment_reversals``, ``payments_daily``, ``payments_monthly``,
``payments_day_totals``, ``payments_facility_days``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

import asyncpg

from services.reporting import domain
from services.reporting.projections.rows import Capture, PaymentRow, Reversal

TOKYO_DAY = "(({}) AT TIME ZONE 'Asia/Tokyo')::date"
"""A time's day in Asia/Tokyo, computed by PostgreSQL as domain.tokyo_day does."""


BucketKey = tuple[date, str, str, str]  # day, facility, method, brand


class _Capture(NamedTuple):
    bucket: BucketKey
    state: domain.CaptureState


async def record_captures_and_reversals(
    conn: asyncpg.Connection,
    rows: Sequence[PaymentRow],
    captures: Sequence[Capture],
    reversals: Sequence[Reversal],
) -> None:
    """Count the batch's new captures, then replay its new refunds and voids (and those that
    were waiting for these captures) in stream order (``rows``)."""
    replay = _Replay()
    if captures:
        await _store_captures(conn, captures, bool(reversals), replay)
    if reversals:
        await _store_reversals(conn, reversals, replay)
    if not replay.waiting and not replay.new_reversals:
        return  # nothing to reverse: the common case, one statement in all
    replay.run(rows)
    if replay.applied:
        await _write_reversals(conn, replay)


@dataclass
class _Replay:
    """The batch's reversals replayed in stream order over the capture states: a capture is
    there for a reversal once it was stored before the batch or came earlier in it; until
    then the reversal waits for it."""

    states: dict[uuid.UUID, _Capture] = field(default_factory=dict)
    new_captures: set[uuid.UUID] = field(default_factory=set)
    waiting: defaultdict[uuid.UUID, list[Reversal]] = field(
        default_factory=lambda: defaultdict(list)
    )
    new_reversals: set[str] = field(default_factory=set)
    applied: dict[str, None] = field(default_factory=dict)  # reversal ids, in order, once
    touched: set[uuid.UUID] = field(default_factory=set)
    changes: defaultdict[BucketKey, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )

    def run(self, rows: Sequence[PaymentRow]) -> None:
        present = set(self.states) - self.new_captures
        for row in rows:
            if isinstance(row, Capture) and row.payment_id in self.new_captures:
                if row.payment_id not in present:
                    present.add(row.payment_id)
                    for rev in sorted(self.waiting.pop(row.payment_id, ()), key=_reversal_order):
                        self.reverse(rev)
            elif isinstance(row, Reversal) and row.reversal_id in self.new_reversals:
                self.new_reversals.discard(row.reversal_id)  # a second copy is a duplicate
                if row.payment_id in present:
                    self.reverse(row)
                else:
                    self.waiting[row.payment_id].append(row)

    def reverse(self, rev: Reversal) -> None:
        bucket, state = self.states[rev.payment_id]
        if rev.kind == "void":
            after, change = domain.void(state)
        else:
            after, change = domain.refund(state, rev.amount_yen)
        self.states[rev.payment_id] = _Capture(bucket, after)
        self.applied[rev.reversal_id] = None
        self.touched.add(rev.payment_id)
        total = self.changes[bucket]
        total[0] += change.count
        total[1] += change.amount_yen


async def _store_captures(
    conn: asyncpg.Connection, captures: Sequence[Capture], every: bool, replay: _Replay
) -> None:
    """The new captures and their buckets; the reversals that were waiting for them, and
    with ``every`` (the batch has reversals of its own) every new capture's state."""
    for r in await conn.fetch(
        _CAPTURES,
        [c.payment_id for c in captures],
        [c.facility_code for c in captures],
        [c.method for c in captures],
        [c.brand for c in captures],
        [c.amount_yen for c in captures],
        [c.captured_at for c in captures],
        every,
    ):
        pid = r["payment_id"]
        replay.new_captures.add(pid)
        replay.states[pid] = _Capture(
            (r["day"], r["facility_code"], r["method"], r["brand"]),
            domain.CaptureState(r["amount_yen"]),
        )
        if r["reversal_id"] is not None:
            replay.waiting[pid].append(
                Reversal(r["reversal_id"], pid, r["kind"], r["reversed_yen"], r["occurred_at"])
            )


async def _store_reversals(
    conn: asyncpg.Connection, reversals: Sequence[Reversal], replay: _Replay
) -> None:
    """The new reversals, with the state of their capture when it is here."""
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
        replay.new_reversals.add(r["reversal_id"])
        pid = r["payment_id"]
        if pid not in replay.new_captures:  # new captures start from the state the batch made
            replay.states[pid] = _Capture(
                (r["day"], r["facility_code"], r["method"], r["brand"]),
                domain.CaptureState(r["amount_yen"], r["refunded_yen"], r["voided"]),
            )


async def _write_reversals(conn: asyncpg.Connection, replay: _Replay) -> None:
    payments = {pid: replay.states[pid].state for pid in replay.touched}
    changes = replay.changes
    await conn.execute(
        _APPLY_REVERSALS,
        list(payments),
        [s.refunded_yen for s in payments.values()],
        [s.voided for s in payments.values()],
        list(replay.applied),
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
    SELECT id, facility, method, brand, amount, at, {TOKYO_DAY.format("at")} FROM c
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
