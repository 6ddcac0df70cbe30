"""Terminal transactions over NATS: posted once, refused with a reason, never a card number."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from contracts.payments import (
    PaymentCapturedV1,
    PaymentRefundedV1,
    PaymentVoidedV1,
    TerminalTransactionConflictV1,
)
from contracts.subjects import PAYMENTS, TERMINALS
from services.payments.handlers.registry import TerminalIdentity, register_terminal
from services.runtime.dlq import list_dead_letters
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import (
    revenue_yen,
    terminal_publishes,
    transaction,
)


async def registered(payments: Any, facility: str = "shiminka") -> TerminalIdentity:
    return await register_terminal(payments.pool, facility)


async def count(pool: asyncpg.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def published(js: JetStreamContext, namespace: str, event: type[Any]) -> list[dict[str, Any]]:
    """The bodies of ``event`` in the PAYMENTS stream."""
    stream = PAYMENTS.stream_name(namespace)
    info = await js.stream_info(stream)
    bodies = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(stream, seq=seq, direct=True)
        if (msg.subject or "").endswith(event.subject):
            bodies.append(json.loads(msg.data or b"{}"))
    return bodies


async def dead_letters(js: JetStreamContext, namespace: str, n: int) -> list[Any]:
    async def enough() -> list[Any]:
        letters = await list_dead_letters(js, namespace, consumer="payments_terminals")
        return letters if len(letters) >= n else []

    return await wait_for(enough)


async def test_the_same_transaction_published_three_times_is_posted_once(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    stream = TERMINALS.stream_name(namespace)
    config = (await js.stream_info(stream)).config
    config.duplicate_window = 1.0  # a short window, so the third copy gets past JetStream
    await js.update_stream(config)
    tx = transaction(terminal.terminal_id, "T01-000001")

    await terminal_publishes(js, namespace, tx)
    await terminal_publishes(js, namespace, tx)  # inside the window: JetStream drops it
    await wait_for(lambda: count(payments.pool, "payments"))
    # The (terminal, transaction id) key is what dedupes, for ever: the terminals' consumer
    # writes no inbox row (its handler is keyed), so only that key can stop the third copy.
    assert await count(payments.pool, "inbox") == 0
    await asyncio.sleep(1.5)  # past the duplicate window
    await terminal_publishes(js, namespace, tx)
    [consumer] = [c for c in payments.ctx.consumers if c.name == "payments_terminals"]
    await wait_for(lambda: asyncio.sleep(0, consumer.stats.processed >= 2))

    assert (await js.stream_info(stream)).state.messages == 2  # two stored, one dropped
    assert await count(payments.pool, "payments") == 1
    assert await count(payments.pool, "terminal_transactions") == 1
    assert await count(payments.pool, "postings") == 1
    assert await revenue_yen(payments.pool) == 300
    captured = await wait_for(lambda: published(js, namespace, PaymentCapturedV1))
    await asyncio.sleep(0.5)  # the relay would have published a second event by now
    captured = await published(js, namespace, PaymentCapturedV1)
    assert len(captured) == 1
    assert captured[0]["terminal_id"] == terminal.terminal_id
    assert captured[0]["channel"] == "terminal"
    assert captured[0]["receipt_number"] == "shiminka-2026-000001"


async def test_a_full_card_number_is_refused_masked_and_erased(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    pan = "4111 1111 1111 1111"
    tx = transaction(
        terminal.terminal_id,
        "T01-000002",
        method="credit",
        brand="Visa",
        card={"token": "tok_abcdefgh", "brand": "Visa", "last4": "1111"},
        item=f"card {pan}",
    )
    seq = await terminal_publishes(js, namespace, tx)
    [letter] = await dead_letters(js, namespace, 1)

    assert "full card number (PAN) is refused" in letter.reason
    assert pan not in letter.body.decode()
    assert "**** **** **** 1111" not in letter.body.decode()  # digits masked, spaces too
    assert "1111" in letter.body.decode()
    assert await count(payments.pool, "payments") == 0
    assert await count(payments.pool, "postings") == 0
    from nats.js.errors import NotFoundError

    with pytest.raises(NotFoundError):
        await js.get_msg(TERMINALS.stream_name(namespace), seq=seq, direct=True)


async def test_a_refund_above_the_capture_is_refused_with_the_reason(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    t = terminal.terminal_id
    await terminal_publishes(js, namespace, transaction(t, "C1", amount_yen=750))
    await terminal_publishes(
        js,
        namespace,
        transaction(t, "R1", kind="refund", amount_yen=500, original_transaction_id="C1"),
    )
    await terminal_publishes(
        js,
        namespace,
        transaction(t, "R2", kind="refund", amount_yen=251, original_transaction_id="C1"),
    )
    [letter] = await dead_letters(js, namespace, 1)

    assert "RefundExceedsCapture" in letter.reason
    assert "250 of 750 yen" in letter.reason
    assert letter.headers["ce-id"] == f"{t}/R2"
    payment = await payments.pool.fetchrow("SELECT * FROM payments")
    assert (payment["amount_yen"], payment["refunded_yen"]) == (750, 500)
    assert await revenue_yen(payments.pool) == 250
    refunded = await wait_for(lambda: published(js, namespace, PaymentRefundedV1))
    assert [(r["amount_yen"], r["refunded_total_yen"]) for r in refunded] == [(500, 500)]


async def test_a_void_reverses_the_capture_in_the_ledger(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    t = terminal.terminal_id
    await terminal_publishes(js, namespace, transaction(t, "C1", method="cash", brand=None))
    await terminal_publishes(
        js,
        namespace,
        transaction(t, "V1", kind="void", method="cash", brand=None, original_transaction_id="C1"),
    )
    voided = await wait_for(lambda: published(js, namespace, PaymentVoidedV1))

    assert voided[0]["amount_yen"] == 300
    rows = await payments.pool.fetch(
        "SELECT kind, reverses IS NOT NULL AS reverses FROM postings ORDER BY posted_at"
    )
    assert [(r["kind"], r["reverses"]) for r in rows] == [("capture", False), ("void", True)]
    assert await revenue_yen(payments.pool) == 0
    cash = await payments.pool.fetchval(
        "SELECT sum(debit_yen - credit_yen) FROM ledger_entries WHERE account = 'cash'"
    )
    assert cash == 0


async def test_a_terminal_publishing_for_another_terminal_or_facility_is_dead_lettered(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    mine = await registered(payments, "shiminka")
    other = await registered(payments, "bijutsukan")
    # On its own subject, but claiming to be the other terminal (or its facility):
    await terminal_publishes(
        js,
        namespace,
        transaction(other.terminal_id, "X1", facility_code="bijutsukan"),
        subject=mine.subject,
    )
    # A registered terminal sending for a facility it is not registered to:
    await terminal_publishes(
        js, namespace, transaction(mine.terminal_id, "X2", facility_code="bijutsukan")
    )
    # An unknown terminal:
    await terminal_publishes(js, namespace, transaction("shiminka-t99", "X3"))
    letters = await dead_letters(js, namespace, 3)
    reasons = {json.loads(d.body)["transaction_id"]: d.reason for d in letters}

    assert "is not terminal 'bijutsukan-t01''s own subject" in reasons["X1"]
    assert "TerminalNotAtFacility" in reasons["X2"]
    assert "UnknownTerminal" in reasons["X3"]
    assert await count(payments.pool, "postings") == 0


async def test_an_invalid_transaction_is_dead_lettered_naming_the_field(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    await terminal_publishes(js, namespace, transaction(terminal.terminal_id, "B1", amount_yen=-5))
    await terminal_publishes(
        js, namespace, transaction(terminal.terminal_id, "B2", occurred_at="2026-11-24T10:15:00")
    )
    letters = await dead_letters(js, namespace, 2)
    reasons = sorted(d.reason for d in letters)

    assert "amount_yen: Input should be greater than 0" in reasons[0]
    assert "occurred_at: Input should have timezone info" in reasons[1]
    assert await count(payments.pool, "postings") == 0


async def test_the_ledger_is_append_only_and_refuses_unbalanced_or_orphan_entries(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    await terminal_publishes(js, namespace, transaction(terminal.terminal_id, "C1"))
    await wait_for(lambda: count(payments.pool, "postings"))

    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
        await payments.pool.execute("UPDATE ledger_entries SET debit_yen = 1")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
        await payments.pool.execute("DELETE FROM postings")
    unbalanced = """
        WITH p AS (INSERT INTO postings (posting_id, facility_code, kind, business_date)
                   VALUES (gen_random_uuid(), 'shiminka', 'capture', current_date)
                   RETURNING posting_id)
        INSERT INTO ledger_entries (posting_id, account, debit_yen)
        SELECT posting_id, 'cash', 100 FROM p"""
    with pytest.raises(asyncpg.exceptions.CheckViolationError, match="does not balance"):
        await payments.pool.execute(unbalanced)
    orphans = """
        INSERT INTO ledger_entries (posting_id, account, debit_yen, credit_yen)
        VALUES ('00000000-0000-4000-8000-000000000001', 'cash', 100, 0),
               ('00000000-0000-4000-8000-000000000001', 'revenue', 0, 100)"""
    with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError, match="does not exist"):
        await payments.pool.execute(orphans)


async def test_keys_to_facilities_terminals_and_payments_are_checked_and_kept(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    """The registry's foreign keys, checked once per statement (migration 0009), still refuse
    a row that refers to nothing, and a referenced row cannot go."""
    terminal = await registered(payments)
    await terminal_publishes(js, namespace, transaction(terminal.terminal_id, "K1"))
    await wait_for(lambda: count(payments.pool, "postings"))
    payment = await payments.pool.fetchrow("SELECT * FROM payments")
    fk = asyncpg.exceptions.ForeignKeyViolationError

    copy = """INSERT INTO payments (payment_id, facility_code, terminal_id, channel, method,
                                    amount_yen, item, occurred_at, receipt_number, fiscal_year,
                                    receipt_serial)
              VALUES (gen_random_uuid(), $1, $2, 'terminal', 'qr', 300, 'x', now(), $3,
                      2026, 999)"""
    with pytest.raises(fk, match="facility_code nowhere of payments is not a key of facilities"):
        await payments.pool.execute(copy, "nowhere", terminal.terminal_id, "R-1")
    with pytest.raises(fk, match="terminal_id t-none of payments is not a key of terminals"):
        await payments.pool.execute(copy, "shiminka", "t-none", "R-2")
    with pytest.raises(fk, match=r"payment_id \S+ of postings is not a key of payments"):
        await payments.pool.execute(
            """INSERT INTO postings (posting_id, facility_code, kind, payment_id, business_date)
               VALUES (gen_random_uuid(), 'shiminka', 'capture', gen_random_uuid(), current_date)"""
        )
    with pytest.raises(fk, match="terminal_id t-none of terminal_transactions"):
        await payments.pool.execute(
            """INSERT INTO terminal_transactions
                   (terminal_id, transaction_id, kind, payment_id, amount_yen, occurred_at)
               VALUES ('t-none', 'K2', 'capture', $1, 300, now())""",
            payment["payment_id"],
        )
    for statement in (
        "DELETE FROM facilities WHERE code = 'shiminka'",
        f"DELETE FROM terminals WHERE terminal_id = '{terminal.terminal_id}'",
        "UPDATE payments SET payment_id = gen_random_uuid()",
        "DELETE FROM payments",
    ):
        with pytest.raises(fk, match="refused: other rows refer to its key"):
            await payments.pool.execute(statement)
    assert await count(payments.pool, "payments") == 1


async def test_a_batch_of_captures_is_numbered_in_order_per_facility_and_fiscal_year(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    """The set-based path: a burst (one or two consumer batches) of captures at two
    facilities on both sides of the fiscal-year boundary (1 April, Asia/Tokyo), a copy of one
    of them, and a refund of a capture just before it."""
    shiminka = await registered(payments, "shiminka")
    museum = await registered(payments, "bijutsukan")
    march, april = "2027-03-31T23:59:00+09:00", "2027-04-01T00:01:00+09:00"
    sent = [
        transaction(shiminka.terminal_id, "S1", occurred_at=march),
        transaction(museum.terminal_id, "M1", facility_code="bijutsukan", occurred_at=march),
        transaction(shiminka.terminal_id, "S2", occurred_at=april),
        transaction(shiminka.terminal_id, "S3", occurred_at=march),
        transaction(
            shiminka.terminal_id,
            "R1",
            kind="refund",
            amount_yen=100,
            original_transaction_id="S1",
            occurred_at=april,
        ),
        transaction(museum.terminal_id, "M2", facility_code="bijutsukan", occurred_at=april),
    ]
    [consumer] = [c for c in payments.ctx.consumers if c.name == "payments_terminals"]
    for tx in sent:
        await terminal_publishes(js, namespace, tx)
    await terminal_publishes(js, namespace, sent[0], msg_id="copy-of-S1")  # past JetStream

    async def settled() -> bool:
        # The stats count inside the batch's transaction: wait for what is committed.
        done = consumer.stats.processed + consumer.stats.duplicates >= len(sent) + 1
        return (
            done
            and await count(payments.pool, "refunds") == 1
            and await count(payments.pool, "payments") >= 5
        )

    await wait_for(settled)
    rows = await payments.pool.fetch(
        """SELECT t.transaction_id, p.receipt_number FROM terminal_transactions t
           JOIN payments p USING (payment_id) WHERE t.kind = 'capture'"""
    )
    assert {r["transaction_id"]: r["receipt_number"] for r in rows} == {
        "S1": "shiminka-2026-000001",
        "S3": "shiminka-2026-000002",
        "S2": "shiminka-2027-000001",
        "M1": "bijutsukan-2026-000001",
        "M2": "bijutsukan-2027-000001",
    }
    assert await count(payments.pool, "payments") == 5
    assert await count(payments.pool, "refunds") == 1
    assert await revenue_yen(payments.pool, "shiminka") == 3 * 300 - 100
    assert await revenue_yen(payments.pool, "bijutsukan") == 2 * 300
    captured = await wait_for(
        lambda: published_when(js, namespace, PaymentCapturedV1, lambda b: len(b) == 5)
    )
    assert sorted(b["receipt_number"] for b in captured) == sorted(
        r["receipt_number"] for r in rows
    )


async def published_when(
    js: JetStreamContext, namespace: str, event: type[Any], ready: Any
) -> list[dict[str, Any]]:
    bodies = await published(js, namespace, event)
    return bodies if ready(bodies) else []


async def test_a_refund_that_overtakes_its_capture_is_applied_once_the_capture_is_in(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    refund = transaction(
        terminal.terminal_id,
        "R-early",
        kind="refund",
        amount_yen=100,
        original_transaction_id="C-late",
    )
    await terminal_publishes(js, namespace, refund)
    await asyncio.sleep(0.3)  # the refund is fetched, finds no capture, waits for a retry
    await terminal_publishes(js, namespace, transaction(terminal.terminal_id, "C-late"))

    await wait_for(lambda: count(payments.pool, "refunds"), timeout=20)
    assert await count(payments.pool, "payments") == 1
    assert await revenue_yen(payments.pool) == 300 - 100
    [consumer] = [c for c in payments.ctx.consumers if c.name == "payments_terminals"]
    assert consumer.stats.dead_lettered == 0
    assert consumer.stats.nacked >= 1  # it did arrive first
    refunded = await wait_for(
        lambda: published_when(js, namespace, PaymentRefundedV1, lambda b: len(b) == 1)
    )
    assert refunded[0]["amount_yen"] == 100


# A terminal that resets its counter sends old transaction ids again, days later: outside
# JetStream's duplicate window, which these tests stand for by giving the repeat a Nats-Msg-Id
# of its own (ce-id, which payments checks, stays <terminal>/<transaction id>).
LATER = {"msg_id": "days-later"}


async def posted(payments: Any, terminal_id: str, transaction_id: str) -> bool:
    """Whether a transaction is in the ledger: the terminals' consumer handles messages in
    stream order, so once a marker published last is posted, everything before it was seen."""
    return bool(
        await payments.pool.fetchval(
            "SELECT 1 FROM terminal_transactions WHERE terminal_id = $1 AND transaction_id = $2",
            terminal_id,
            transaction_id,
        )
    )


async def test_a_reused_transaction_id_with_other_content_is_a_conflict_told_to_finance(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    t = terminal.terminal_id
    await terminal_publishes(js, namespace, transaction(t, "C1", amount_yen=300))
    await wait_for(lambda: posted(payments, t, "C1"))
    reused = transaction(
        t,
        "C1",
        method="emoney",
        brand="交通系IC",
        amount_yen=450,
        item="戸籍謄本",
        occurred_at="2026-12-01T09:02:00+09:00",
    )
    await terminal_publishes(js, namespace, reused, msg_id="reset-1")
    await terminal_publishes(js, namespace, reused, msg_id="reset-2")  # sent again
    letters = await dead_letters(js, namespace, 2)

    first = "capture 300 yen qr PayPay 住民票の写し at 2026-11-24T10:15:00+09:00"
    again = "capture 450 yen emoney 交通系IC 戸籍謄本 at 2026-12-01T09:02:00+09:00"
    for letter in letters:
        assert letter.reason.startswith("refused: TerminalTransactionConflict: ")
        assert f"posted as [{first}] and now arrives as [{again}]" in letter.reason
    conflict = await wait_for(lambda: published(js, namespace, TerminalTransactionConflictV1))
    assert len(conflict) == 1  # the same repeat twice is announced once
    assert (conflict[0]["terminal_id"], conflict[0]["transaction_id"]) == (t, "C1")
    assert (conflict[0]["posted"]["amount_yen"], conflict[0]["received"]["amount_yen"]) == (
        300,
        450,
    )
    assert conflict[0]["received"]["brand"] == "交通系IC"
    assert await count(payments.pool, "payments") == 1  # the ledger keeps the first version
    assert await revenue_yen(payments.pool) == 300


async def test_a_reused_refund_id_for_another_amount_is_a_conflict(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    t = terminal.terminal_id
    await terminal_publishes(js, namespace, transaction(t, "C1", amount_yen=750))
    refund = transaction(t, "R1", kind="refund", amount_yen=300, original_transaction_id="C1")
    await terminal_publishes(js, namespace, refund)
    await terminal_publishes(js, namespace, refund | {"amount_yen": 200}, **LATER)
    [letter] = await dead_letters(js, namespace, 1)

    assert "posted as [refund 300 yen qr PayPay of C1 at" in letter.reason
    assert "now arrives as [refund 200 yen qr PayPay of C1 at" in letter.reason
    assert len(await wait_for(lambda: published(js, namespace, TerminalTransactionConflictV1))) == 1
    assert await revenue_yen(payments.pool) == 450


async def test_a_reused_transaction_id_with_the_same_content_stays_a_harmless_duplicate(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = await registered(payments)
    t = terminal.terminal_id
    capture = transaction(t, "C1", occurred_at="2026-11-24T10:15:00+09:00")
    await terminal_publishes(js, namespace, capture)
    refund = transaction(t, "R1", kind="refund", amount_yen=100, original_transaction_id="C1")
    await terminal_publishes(js, namespace, refund)
    # The same content again, its time written in UTC: the same moment.
    await terminal_publishes(
        js, namespace, capture | {"occurred_at": "2026-11-24T01:15:00+00:00"}, **LATER
    )
    await terminal_publishes(js, namespace, refund, **LATER)
    await terminal_publishes(js, namespace, transaction(t, "MARKER"))
    await wait_for(lambda: posted(payments, t, "MARKER"))

    assert await list_dead_letters(js, namespace, consumer="payments_terminals") == []
    assert await count(payments.pool, "terminal_conflicts") == 0
    assert await count(payments.pool, "payments") == 2
    assert await revenue_yen(payments.pool) == 500
