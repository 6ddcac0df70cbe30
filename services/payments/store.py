"""asyncpg queries on the payments schema (its own tables only)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from contracts.facilities import FACILITIES
from contracts.payments import (
    AttentionReason,
    PaymentChannel,
    PaymentMethod,
    SettlementBatch,
    SettlementDifference,
    TerminalTransactionKind,
    TerminalTransactionVersion,
)
from services.payments.domain import AttentionState, PaymentRequestState, PaymentState
from services.payments.domain import receipt_number as format_receipt_number
from services.payments.ledger import PROCESSOR_FEE, REVENUE, Entry, LedgerDay, Posting, PostingKind
from services.runtime import db


async def sync_facilities(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Load the reference list of facilities (contracts.facilities) into the schema."""
    await conn.executemany(
        """INSERT INTO facilities (code, name_ja, kind, paid_for) VALUES ($1, $2, $3, $4)
           ON CONFLICT (code) DO UPDATE
           SET name_ja = EXCLUDED.name_ja, kind = EXCLUDED.kind, paid_for = EXCLUDED.paid_for""",
        [(f.code, f.name_ja, f.kind.value, f.paid_for.value) for f in FACILITIES],
    )


# --- terminals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalRow:
    terminal_id: str
    facility_code: str
    kind: str
    nats_user: str
    registered_at: datetime


async def insert_terminal(
    conn: asyncpg.Connection, terminal_id: str, facility_code: str, kind: str, nats_user: str
) -> TerminalRow:
    row = await conn.fetchrow(
        """INSERT INTO terminals (terminal_id, facility_code, kind, nats_user)
           VALUES ($1, $2, $3, $4) RETURNING *""",
        terminal_id,
        facility_code,
        kind,
        nats_user,
    )
    assert row is not None
    return TerminalRow(**dict(row))


@dataclass(frozen=True)
class TerminalKey:
    """A terminal's NATS public key in force (端末の鍵)."""

    terminal_id: str
    facility_code: str
    public_key: str


async def issue_terminal_key(
    conn: asyncpg.Connection, terminal_id: str, public_key: str, issued_by: str
) -> None:
    await conn.execute(
        "INSERT INTO terminal_keys (public_key, terminal_id, issued_by) VALUES ($1, $2, $3)",
        public_key,
        terminal_id,
        issued_by,
    )


async def revoke_terminal_key(
    conn: asyncpg.Connection, terminal_id: str, revoked_by: str, reason: str
) -> str | None:
    """Revoke the terminal's key in force; its public key, or None if it had none."""
    revoked: str | None = await conn.fetchval(
        """UPDATE terminal_keys SET revoked_at = now(), revoked_by = $2, reason = $3
           WHERE terminal_id = $1 AND revoked_at IS NULL RETURNING public_key""",
        terminal_id,
        revoked_by,
        reason,
    )
    return revoked


async def terminal_keys_in_force(conn: asyncpg.Connection | asyncpg.Pool) -> list[TerminalKey]:
    rows = await conn.fetch(
        """SELECT k.terminal_id, t.facility_code, k.public_key
           FROM terminal_keys k JOIN terminals t USING (terminal_id)
           WHERE k.revoked_at IS NULL ORDER BY k.terminal_id"""
    )
    return [TerminalKey(**dict(r)) for r in rows]


async def next_terminal_number(conn: asyncpg.Connection, facility_code: str) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM terminals WHERE facility_code = $1", facility_code
    )
    return int(count) + 1


async def get_terminal(
    conn: asyncpg.Connection | asyncpg.Pool, terminal_id: str
) -> TerminalRow | None:
    row = await conn.fetchrow("SELECT * FROM terminals WHERE terminal_id = $1", terminal_id)
    return TerminalRow(**dict(row)) if row else None


async def list_terminals(conn: asyncpg.Connection | asyncpg.Pool) -> list[TerminalRow]:
    rows = await conn.fetch("SELECT * FROM terminals ORDER BY terminal_id")
    return [TerminalRow(**dict(r)) for r in rows]


# --- payments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalClaim:
    """A terminal transaction to record under its (terminal, transaction id) key."""

    terminal_id: str
    transaction_id: str
    kind: str
    payment_id: uuid.UUID
    amount_yen: int
    occurred_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.terminal_id, self.transaction_id)


async def facilities_of_terminals(
    conn: asyncpg.Connection | asyncpg.Pool, terminal_ids: Sequence[str]
) -> dict[str, str]:
    """Registered terminals among ``terminal_ids`` and the facility each belongs to."""
    rows = await conn.fetch(
        "SELECT terminal_id, facility_code FROM terminals WHERE terminal_id = ANY($1::text[])",
        list(terminal_ids),
    )
    return {r["terminal_id"]: r["facility_code"] for r in rows}


async def claim_terminal_transactions(
    conn: asyncpg.Connection, claims: Sequence[TerminalClaim]
) -> set[tuple[str, str]]:
    """Record terminal transaction ids in one statement; the keys that were new (a key posted
    before, maybe long ago, or twice in ``claims``, is claimed once)."""
    rows = await conn.fetch(
        """INSERT INTO terminal_transactions
               (terminal_id, transaction_id, kind, payment_id, amount_yen, occurred_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[],
                                $6::timestamptz[])
           ON CONFLICT (terminal_id, transaction_id) DO NOTHING
           RETURNING terminal_id, transaction_id""",
        [c.terminal_id for c in claims],
        [c.transaction_id for c in claims],
        [c.kind for c in claims],
        [c.payment_id for c in claims],
        [c.amount_yen for c in claims],
        [c.occurred_at for c in claims],
    )
    return {(r["terminal_id"], r["transaction_id"]) for r in rows}


async def posted_versions(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], TerminalTransactionVersion]:
    """What the ledger holds under each (terminal, transaction id): a capture's own means and
    item, a refund's or void's amount, time and the capture it undoes."""
    rows = await conn.fetch(
        """SELECT t.terminal_id, t.transaction_id, t.kind, t.amount_yen, t.occurred_at,
                  p.method, p.brand, p.item,
                  (SELECT c.transaction_id FROM terminal_transactions c
                    WHERE c.payment_id = t.payment_id AND c.kind = 'capture' LIMIT 1) AS original
           FROM unnest($1::text[], $2::text[]) AS k(terminal_id, transaction_id)
           JOIN terminal_transactions t USING (terminal_id, transaction_id)
           JOIN payments p ON p.payment_id = t.payment_id""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    found = {}
    for r in rows:
        capture = r["kind"] == TerminalTransactionKind.CAPTURE.value
        found[(r["terminal_id"], r["transaction_id"])] = TerminalTransactionVersion(
            kind=TerminalTransactionKind(r["kind"]),
            method=PaymentMethod(r["method"]),
            brand=r["brand"],
            amount_yen=int(r["amount_yen"]),
            item=r["item"] if capture else None,
            occurred_at=r["occurred_at"],
            original_transaction_id=None if capture else r["original"],
        )
    return found


async def insert_terminal_conflict(
    conn: asyncpg.Connection,
    terminal_id: str,
    transaction_id: str,
    facility_code: str,
    posted: TerminalTransactionVersion,
    received: TerminalTransactionVersion,
    detected_at: datetime,
) -> bool:
    """Keep a conflicting repeat; False when this very repeat was kept before."""
    received_json = received.model_dump_json()
    inserted = await conn.fetchval(
        """INSERT INTO terminal_conflicts (terminal_id, transaction_id, received_key,
                                           facility_code, posted, received, detected_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)
           ON CONFLICT DO NOTHING RETURNING true""",
        terminal_id,
        transaction_id,
        received_json,
        facility_code,
        posted.model_dump_json(),
        received_json,
        detected_at,
    )
    return bool(inserted)


async def record_capture(conn: asyncpg.Connection, p: NewCapture, posting: Posting) -> str:
    """Number the receipt, write the payment, its receipt and its ledger posting; return the
    receipt number."""
    [number] = await record_captures(conn, [(p, posting)])
    return number


_PAYMENT_COLUMNS = (
    "payment_id", "facility_code", "terminal_id", "channel", "method", "brand", "amount_yen",
    "item", "occurred_at", "receipt_number", "application_id", "card_token", "card_last4",
    "fiscal_year", "receipt_serial",
)  # fmt: skip


async def record_captures(
    conn: asyncpg.Connection, captures: Sequence[tuple[NewCapture, Posting]]
) -> list[str]:
    """Number the receipts, then write the payments (each with its receipt's fiscal year and
    serial) and balanced ledger postings of many captures with one statement per table
    (ingestion speed); the receipt numbers, in order.

    Receipts are numbered per facility and fiscal year (``domain.receipt_number``) in the
    order of ``captures``: each counter is advanced once by the batch's count (its row stays
    locked until the transaction ends, so numbers are never given twice or skipped).
    """
    wanted = Counter((c.facility_code, c.fiscal_year) for c, _ in captures)
    keys = sorted(wanted)  # one lock order for every writer: no deadlock between replicas
    counters = await conn.fetch(
        """INSERT INTO receipt_counters (facility_code, fiscal_year, last_number)
           SELECT * FROM unnest($1::text[], $2::int[], $3::int[])
           ON CONFLICT (facility_code, fiscal_year)
           DO UPDATE SET last_number = receipt_counters.last_number + EXCLUDED.last_number
           RETURNING facility_code, fiscal_year, last_number""",
        [f for f, _ in keys],
        [y for _, y in keys],
        [wanted[k] for k in keys],
    )
    serial = {
        (r["facility_code"], r["fiscal_year"]): r["last_number"]
        - wanted[(r["facility_code"], r["fiscal_year"])]
        for r in counters
    }
    serials: list[int] = []
    for c, _ in captures:
        serial[(c.facility_code, c.fiscal_year)] += 1
        serials.append(serial[(c.facility_code, c.fiscal_year)])
    numbers = [
        format_receipt_number(c.facility_code, c.fiscal_year, n)
        for (c, _), n in zip(captures, serials, strict=True)
    ]
    await db.append_rows(
        conn,
        "payments",
        _PAYMENT_COLUMNS,
        (
            (
                c.payment_id,
                c.facility_code,
                c.terminal_id,
                c.channel,
                c.method.value,
                c.brand,
                c.amount_yen,
                c.item,
                c.occurred_at,
                number,
                c.application_id,
                c.card_token,
                c.card_last4,
                c.fiscal_year,
                serial_number,
            )
            for (c, _), number, serial_number in zip(captures, numbers, serials, strict=True)
        ),
    )
    await insert_postings(conn, [posting for _, posting in captures])
    return numbers


@dataclass(frozen=True)
class NewCapture:
    """A capture whose receipt number the database assigns (see ``record_capture``)."""

    payment_id: uuid.UUID
    facility_code: str
    terminal_id: str | None
    channel: str
    method: PaymentMethod
    brand: str | None
    amount_yen: int
    item: str
    occurred_at: datetime
    fiscal_year: int
    application_id: uuid.UUID | None = None
    card_token: str | None = None
    card_last4: str | None = None


def _state(row: asyncpg.Record) -> PaymentState:
    return PaymentState(
        payment_id=row["payment_id"],
        facility_code=row["facility_code"],
        method=PaymentMethod(row["method"]),
        brand=row["brand"],
        amount_yen=int(row["amount_yen"]),
        refunded_yen=int(row["refunded_yen"]),
        voided=bool(row["voided"]),
        channel=PaymentChannel(row["channel"]),
    )


async def lock_payment(conn: asyncpg.Connection, payment_id: uuid.UUID) -> PaymentState | None:
    row = await conn.fetchrow("SELECT * FROM payments WHERE payment_id = $1 FOR UPDATE", payment_id)
    return _state(row) if row else None


async def lock_payment_of_transaction(
    conn: asyncpg.Connection, terminal_id: str, transaction_id: str
) -> PaymentState | None:
    row = await conn.fetchrow(
        """SELECT p.* FROM payments p
           JOIN terminal_transactions t ON t.payment_id = p.payment_id AND t.kind = 'capture'
           WHERE t.terminal_id = $1 AND t.transaction_id = $2
           FOR UPDATE OF p""",
        terminal_id,
        transaction_id,
    )
    return _state(row) if row else None


async def record_refund(
    conn: asyncpg.Connection,
    refund_id: uuid.UUID,
    payment_id: uuid.UUID,
    amount_yen: int,
    refunded_total_yen: int,
    occurred_at: datetime,
    staff_id: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO refunds (refund_id, payment_id, amount_yen, occurred_at, staff_id)
           VALUES ($1, $2, $3, $4, $5)""",
        refund_id,
        payment_id,
        amount_yen,
        occurred_at,
        staff_id,
    )
    await conn.execute(
        "UPDATE payments SET refunded_yen = $2 WHERE payment_id = $1",
        payment_id,
        refunded_total_yen,
    )


async def mark_voided(conn: asyncpg.Connection, payment_id: uuid.UUID) -> None:
    await conn.execute("UPDATE payments SET voided = true WHERE payment_id = $1", payment_id)


# --- the ledger ----------------------------------------------------------------------------


async def insert_posting(conn: asyncpg.Connection, posting: Posting) -> None:
    await insert_postings(conn, [posting])


async def insert_postings(conn: asyncpg.Connection, postings: Sequence[Posting]) -> None:
    """Postings and their entries, one statement each: the ledger's trigger checks at the end
    of the entries' statement that every posting it touched balances."""
    await db.append_rows(
        conn,
        "postings",
        ("posting_id", "facility_code", "kind", "payment_id", "reverses", "business_date", "memo"),
        (
            (p.posting_id, p.facility_code, p.kind.value, p.payment_id, p.reverses,
             p.business_date, p.memo)
            for p in postings
        ),
    )  # fmt: skip
    await db.append_rows(
        conn,
        "ledger_entries",
        ("posting_id", "account", "debit_yen", "credit_yen"),
        ((p.posting_id, e.account, e.debit_yen, e.credit_yen) for p in postings for e in p.entries),
    )


async def capture_posting_of(conn: asyncpg.Connection, payment_id: uuid.UUID) -> Posting | None:
    row = await conn.fetchrow(
        "SELECT * FROM postings WHERE payment_id = $1 AND kind = 'capture'", payment_id
    )
    if row is None:
        return None
    entries = await conn.fetch(
        "SELECT * FROM ledger_entries WHERE posting_id = $1 ORDER BY entry_id", row["posting_id"]
    )
    return Posting(
        posting_id=row["posting_id"],
        kind=PostingKind(row["kind"]),
        facility_code=row["facility_code"],
        business_date=row["business_date"],
        entries=tuple(
            Entry(e["account"], int(e["debit_yen"]), int(e["credit_yen"])) for e in entries
        ),
        payment_id=row["payment_id"],
        reverses=row["reverses"],
        memo=row["memo"],
    )


async def unbalanced_postings(conn: asyncpg.Connection | asyncpg.Pool) -> list[uuid.UUID]:
    """Postings whose debits differ from their credits (always empty; tests check it)."""
    rows = await conn.fetch(
        """SELECT p.posting_id FROM postings p
           LEFT JOIN ledger_entries e ON e.posting_id = p.posting_id
           GROUP BY p.posting_id
           HAVING coalesce(sum(e.debit_yen), 0) <> coalesce(sum(e.credit_yen), 0)
               OR count(e.entry_id) = 0"""
    )
    return [r["posting_id"] for r in rows]


# --- receipts ------------------------------------------------------------------------------


async def print_receipt(conn: asyncpg.Connection, receipt_number: str) -> asyncpg.Record | None:
    """Count one more print of a receipt; the row with ``prints`` before this one."""
    return await conn.fetchrow(
        """WITH printed AS (
               UPDATE payments SET receipt_prints = receipt_prints + 1 WHERE receipt_number = $1
               RETURNING payment_id, receipt_prints - 1 AS earlier_prints)
           SELECT p.*, f.name_ja AS facility_name, printed.earlier_prints
           FROM printed JOIN payments p USING (payment_id)
           JOIN facilities f ON f.code = p.facility_code""",
        receipt_number,
    )


# --- online payment requests ---------------------------------------------------------------


async def insert_payment_request(
    conn: asyncpg.Connection,
    request_id: uuid.UUID,
    application_id: uuid.UUID,
    reference: str,
    facility_code: str,
    fee_item: str,
    amount_yen: int,
    requested_at: datetime,
    expires_at: datetime,
    applicant_id: uuid.UUID | None,
    next_check_at: datetime,
) -> bool:
    """A new payment request, first asked about at ``next_check_at`` by the payment sweep;
    False when the application already has one."""
    inserted = await conn.fetchval(
        """INSERT INTO payment_requests (request_id, application_id, reference, facility_code,
                                         fee_item, amount_yen, requested_at, expires_at,
                                         applicant_id, next_check_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (application_id) DO NOTHING RETURNING true""",
        request_id,
        application_id,
        reference,
        facility_code,
        fee_item,
        amount_yen,
        requested_at,
        expires_at,
        applicant_id,
        next_check_at,
    )
    return bool(inserted)


def _request(row: asyncpg.Record) -> PaymentRequestState:
    return PaymentRequestState(
        request_id=row["request_id"],
        application_id=row["application_id"],
        reference=row["reference"],
        facility_code=row["facility_code"],
        fee_item=row["fee_item"],
        amount_yen=int(row["amount_yen"]),
        status=row["status"],
        expires_at=row["expires_at"],
    )


async def lock_payment_request(
    conn: asyncpg.Connection, reference: str
) -> PaymentRequestState | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_requests WHERE reference = $1 FOR UPDATE", reference
    )
    return _request(row) if row else None


async def payment_request_of(
    conn: asyncpg.Connection | asyncpg.Pool, application_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM payment_requests WHERE application_id = $1", application_id
    )


async def mark_request_paid(
    conn: asyncpg.Connection, request_id: uuid.UUID, payment_id: uuid.UUID
) -> None:
    await conn.execute(
        """UPDATE payment_requests SET status = 'paid', payment_id = $2, closed_at = now()
           WHERE request_id = $1""",
        request_id,
        payment_id,
    )


async def claim_provider_notice(
    conn: asyncpg.Connection, event_id: str, reference: str, amount_yen: int, learnt_by: str
) -> asyncpg.Record | None:
    """Take a provider notice id; None when it is new, else the row kept when it was first
    accepted (its reference, amount and outcome). A concurrent copy waits here until the first
    commits (or rolls back, and then takes the id itself)."""
    inserted = await conn.fetchval(
        """INSERT INTO provider_events (event_id, reference, amount_yen, learnt_by)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (event_id) DO NOTHING RETURNING true""",
        event_id,
        reference,
        amount_yen,
        learnt_by,
    )
    if inserted:
        return None
    return await conn.fetchrow("SELECT * FROM provider_events WHERE event_id = $1", event_id)


async def record_notice_outcome(
    conn: asyncpg.Connection, event_id: str, payment_id: uuid.UUID, outcome: str
) -> None:
    await conn.execute(
        "UPDATE provider_events SET payment_id = $2, outcome = $3 WHERE event_id = $1",
        event_id,
        payment_id,
        outcome,
    )


async def insert_attention(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    request_id: uuid.UUID,
    reasons: Sequence[AttentionReason],
    requested_yen: int,
    received_at: datetime,
    learnt_by: str,
) -> None:
    await conn.execute(
        """INSERT INTO payment_attention (payment_id, request_id, reasons, requested_yen,
                                          received_at, learnt_by)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        payment_id,
        request_id,
        [r.value for r in reasons],
        requested_yen,
        received_at,
        learnt_by,
    )


async def lock_attention(conn: asyncpg.Connection, payment_id: uuid.UUID) -> AttentionState | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_attention WHERE payment_id = $1 FOR UPDATE", payment_id
    )
    if row is None:
        return None
    return AttentionState(
        payment_id=row["payment_id"],
        request_id=row["request_id"],
        reasons=tuple(AttentionReason(r) for r in row["reasons"]),
        decided=row["status"] == "decided",
    )


async def attention_action(
    conn: asyncpg.Connection, payment_id: uuid.UUID, idempotency_key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM payment_attention_actions WHERE payment_id = $1 AND idempotency_key = $2",
        payment_id,
        idempotency_key,
    )


async def insert_attention_action(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    idempotency_key: str,
    action: str,
    staff_id: str,
    acted_at: datetime,
    amount_yen: int | None = None,
    refund_id: uuid.UUID | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO payment_attention_actions (payment_id, idempotency_key, action,
                                                  amount_yen, refund_id, staff_id, acted_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        payment_id,
        idempotency_key,
        action,
        amount_yen,
        refund_id,
        staff_id,
        acted_at,
    )


async def decide_attention(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    resolution: str,
    staff_id: str,
    decided_at: datetime,
) -> None:
    await conn.execute(
        """UPDATE payment_attention
           SET status = 'decided', resolution = $2, decided_by = $3, decided_at = $4
           WHERE payment_id = $1""",
        payment_id,
        resolution,
        staff_id,
        decided_at,
    )


_ATTENTION = """
    SELECT a.*, p.amount_yen, p.refunded_yen, p.occurred_at AS paid_at, p.receipt_number,
           p.method, p.brand, p.facility_code, r.reference, r.application_id, r.expires_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'action', x.action, 'amount_yen', x.amount_yen, 'staff_id', x.staff_id,
                        'acted_at', x.acted_at) ORDER BY x.acted_at)
                     FROM payment_attention_actions x WHERE x.payment_id = a.payment_id),
                    '[]'::jsonb)::text AS actions
    FROM payment_attention a
    JOIN payments p USING (payment_id)
    JOIN payment_requests r USING (request_id)"""


async def attention_items(
    conn: asyncpg.Connection | asyncpg.Pool, status: str | None, limit: int
) -> list[asyncpg.Record]:
    """The staff queue, oldest first: open items, decided ones, or both (``status`` None)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _ATTENTION
        + """ WHERE ($1::text IS NULL OR a.status = $1)
              ORDER BY a.received_at, a.payment_id LIMIT $2""",
        status,
        limit,
    )
    return rows


async def attention_item(
    conn: asyncpg.Connection | asyncpg.Pool, payment_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(_ATTENTION + " WHERE a.payment_id = $1", payment_id)


async def lock_payment_request_by_id(
    conn: asyncpg.Connection, request_id: uuid.UUID
) -> PaymentRequestState | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_requests WHERE request_id = $1 FOR UPDATE", request_id
    )
    return _request(row) if row else None


async def expire_due_requests(
    conn: asyncpg.Connection, now: datetime, limit: int = 500
) -> list[PaymentRequestState]:
    rows = await conn.fetch(
        """UPDATE payment_requests
           SET status = 'expired', closed_at = $1, next_check_at = least(next_check_at, $1)
           WHERE request_id IN (
               SELECT request_id FROM payment_requests
               WHERE status = 'pending' AND expires_at <= $1
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING *""",
        now,
        limit,
    )
    return [_request(r) for r in rows]


@dataclass(frozen=True)
class RequestToCheck:
    request_id: uuid.UUID
    reference: str
    checks: int
    """Questions asked before this one."""


async def requests_to_check(
    conn: asyncpg.Connection, now: datetime, horizon_s: float, limit: int
) -> list[RequestToCheck]:
    """Open requests (pending, or expired less than ``horizon_s`` ago) due a question to the
    provider, locked (another replica's sweep skips them)."""
    rows = await conn.fetch(
        """SELECT request_id, reference, checks FROM payment_requests
           WHERE status <> 'paid' AND next_check_at <= $1
             AND expires_at > $1 - make_interval(secs => $2)
           ORDER BY next_check_at LIMIT $3
           FOR UPDATE SKIP LOCKED""",
        now,
        horizon_s,
        limit,
    )
    return [RequestToCheck(r["request_id"], r["reference"], int(r["checks"])) for r in rows]


async def schedule_checks(
    conn: asyncpg.Connection, request_ids: Sequence[uuid.UUID], next_at: Sequence[datetime]
) -> None:
    await conn.execute(
        """UPDATE payment_requests r SET checks = r.checks + 1, next_check_at = n.next_at
           FROM unnest($1::uuid[], $2::timestamptz[]) AS n(request_id, next_at)
           WHERE r.request_id = n.request_id""",
        list(request_ids),
        list(next_at),
    )


# --- settlements and revenue ---------------------------------------------------------------


async def ledger_day(
    conn: asyncpg.Connection, facility_code: str, day: date, accounts: list[str]
) -> dict[str, LedgerDay]:
    """Per receivable account: captures (net of voids) and the net amount of that day."""
    rows = await conn.fetch(
        """SELECT e.account,
                  count(*) FILTER (WHERE p.kind = 'capture')
                    - count(*) FILTER (WHERE p.kind = 'void') AS count,
                  sum(e.debit_yen - e.credit_yen) AS amount
           FROM ledger_entries e JOIN postings p USING (posting_id)
           WHERE p.facility_code = $1 AND p.business_date = $2 AND e.account = ANY($3)
             AND p.kind IN ('capture', 'refund', 'void')
           GROUP BY e.account""",
        facility_code,
        day,
        accounts,
    )
    return {r["account"]: LedgerDay(int(r["count"]), int(r["amount"])) for r in rows}


async def insert_settlement(
    conn: asyncpg.Connection,
    batch: SettlementBatch,
    differences: list[SettlementDifference],
    posting_id: uuid.UUID | None,
) -> bool:
    """Record a batch and its outcome; False when this batch id was received before."""
    inserted = await conn.fetchval(
        """INSERT INTO settlements (batch_id, facility_code, business_date, processor, status,
                                    reported_yen, fee_yen, differences, posting_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
           ON CONFLICT (batch_id) DO NOTHING RETURNING true""",
        batch.batch_id,
        batch.facility_code,
        batch.business_date,
        batch.processor,
        "mismatch" if differences else "reconciled",
        sum(line.amount_yen for line in batch.lines),
        sum(line.fee_yen for line in batch.lines),
        json.dumps([d.model_dump(mode="json") for d in differences]),
        posting_id,
    )
    if not inserted:
        return False
    await conn.executemany(
        """INSERT INTO settlement_lines (batch_id, method, brand, count, amount_yen, fee_yen)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            (
                batch.batch_id,
                line.method.value,
                line.brand,
                line.count,
                line.amount_yen,
                line.fee_yen,
            )
            for line in batch.lines
        ],
    )
    return True


async def settlement(
    conn: asyncpg.Connection | asyncpg.Pool, batch_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM settlements WHERE batch_id = $1", batch_id)


async def settlements(
    conn: asyncpg.Connection | asyncpg.Pool,
    facility_code: str | None,
    date_from: date,
    date_to: date,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM settlements
           WHERE ($1::text IS NULL OR facility_code = $1)
             AND business_date BETWEEN $2 AND $3
           ORDER BY business_date, facility_code, batch_id""",
        facility_code,
        date_from,
        date_to,
    )
    return rows


async def revenue_by_day(
    conn: asyncpg.Connection | asyncpg.Pool,
    facility_code: str | None,
    date_from: date,
    date_to: date,
) -> list[asyncpg.Record]:
    """Gross revenue, processor fee and net per facility and day, with reconciliation status."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH days AS (
               SELECT p.facility_code, p.business_date,
                      coalesce(sum(e.credit_yen - e.debit_yen)
                               FILTER (WHERE e.account = $4), 0) AS gross_yen,
                      coalesce(sum(e.debit_yen - e.credit_yen)
                               FILTER (WHERE e.account = $5), 0) AS fee_yen
               FROM postings p JOIN ledger_entries e USING (posting_id)
               WHERE ($1::text IS NULL OR p.facility_code = $1)
                 AND p.business_date BETWEEN $2 AND $3
               GROUP BY p.facility_code, p.business_date)
           SELECT d.*, d.gross_yen - d.fee_yen AS net_yen,
                  CASE WHEN s.any_mismatch THEN 'mismatch'
                       WHEN s.batches > 0 THEN 'reconciled'
                       ELSE 'unreconciled' END AS reconciliation
           FROM days d
           LEFT JOIN LATERAL (
               SELECT count(*) AS batches, bool_or(status = 'mismatch') AS any_mismatch
               FROM settlements s
               WHERE s.facility_code = d.facility_code AND s.business_date = d.business_date
           ) s ON true
           ORDER BY d.business_date, d.facility_code""",
        facility_code,
        date_from,
        date_to,
        REVENUE,
        PROCESSOR_FEE,
    )
    return rows


# --- staff queries -------------------------------------------------------------------------


async def find_payments(
    conn: asyncpg.Connection | asyncpg.Pool,
    facility_code: str | None,
    date_from: date,
    date_to: date,
    method: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Payments by facility, business day (Asia/Tokyo) and method, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT p.* FROM payments p
           WHERE ($1::text IS NULL OR p.facility_code = $1)
             AND (p.occurred_at AT TIME ZONE 'Asia/Tokyo')::date BETWEEN $2 AND $3
             AND ($4::text IS NULL OR p.method = $4)
           ORDER BY p.occurred_at, p.payment_id
           LIMIT $5""",
        facility_code,
        date_from,
        date_to,
        method,
        limit,
    )
    return rows


async def refund_exists(conn: asyncpg.Connection, refund_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
