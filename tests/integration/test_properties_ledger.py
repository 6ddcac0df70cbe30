"""Property test of payments' ledger: random days of terminal and counter traffic, real SQL.

Hypothesis draws a few captures at several facilities (cash, QR, e-money, credit card) and a
sequence of deliveries: runs of terminal messages applied in one transaction as the consumer
applies a fetched batch (captures, partial and full refunds, voids, refunds from another
terminal or another facility, refunds overtaking their capture, copies of earlier messages),
and staff refunds at the counter with retried requests. Everything goes through payments'
own handlers and store (``record_terminal_transactions``, ``refund_by_staff``) on a fresh
payments schema on the real PostgreSQL. A failed run is applied again message by message,
as the consumer does (it bisects down to the failing events).

After every delivery and at the end, against a plain in-test model of the rules:

* every posting balances and so does the ledger (debits = credits);
* no payment is refunded above its capture; its refunds add up to its refunded amount;
* each message is applied, dropped as a copy, or refused exactly when the model says so;
* revenue per facility and business day (Asia/Tokyo), and each receivable account's day
  (the figures a settlement is reconciled with), equal the model's;
* receipts are numbered 1..n per facility and fiscal year, with no gap and no repeat;
* one PaymentCaptured / PaymentRefunded / PaymentVoided event per posting in the outbox.

A second property sends the payment provider's confirmations of a few application fees in any
order, some of them again (the same notice id), some after their request expired (the expiry job
running in between), some of another amount, through ``confirm_online_payment``: each notice's
outcome (captured, or the reasons it needs staff) is the model's; a repeat gets its first
outcome and changes nothing; each distinct notice is one payment, one PaymentCaptured and its
amount once in revenue; flagged ones are on the staff queue; a request is paid exactly by the
notice that settled it.

Days straddle 2027-04-01, a new fiscal year. ``HYPOTHESIS_PROFILE=soak`` runs more examples.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope
from contracts.payments import ProviderPaymentConfirmation, TerminalTransactionV1
from services.payments.errors import OriginalNotYetPosted, PaymentError
from services.payments.handlers import ingestion, online, refunds, registry
from services.payments.store import payment_requests, settlements, terminals
from services.registry import definition
from services.runtime import db as rdb
from services.runtime.service import migrations_for
from tests.integration.payments.helpers import assert_ledger_balances

settings.register_profile(
    "ledger-ci",
    max_examples=30,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # Shrinking replays hundreds of examples on the database (minutes): CI reports the failing
    # example as drawn; the soak profile shrinks it.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.register_profile(
    "ledger-soak",
    parent=settings.get_profile("ledger-ci"),
    max_examples=300,
    phases=list(Phase),
)
PROFILE = settings.get_profile(
    "ledger-soak" if os.environ.get("HYPOTHESIS_PROFILE") == "soak" else "ledger-ci"
)

JST = timezone(timedelta(hours=9))
FIRST_DAY = datetime(2027, 3, 31, tzinfo=JST)
"""The last day of fiscal year 2026; the next day opens 2027."""

TERMINALS = {
    "shiminka-t01": "shiminka",
    "shiminka-t02": "shiminka",
    "sogo-taiikukan-t01": "sogo-taiikukan",
    "nishiguchi-parking-t01": "nishiguchi-parking",
}
"""Registered in this order at the start of each example (ids are given per facility)."""

MEANS = [
    ("cash", None),
    ("qr", "PayPay"),
    ("qr", "d払い"),
    ("emoney", "交通系IC"),
    ("credit", "Visa"),
]
ACCOUNTS = sorted({"cash" if m == "cash" else f"receivable:{m}:{b}" for m, b in MEANS})
CARD = {"token": "tok_0123456789ab", "brand": "Visa", "last4": "4242"}


# --- the model -------------------------------------------------------------------------------


def account_of(method: str, brand: str | None) -> str:
    """Where the money waits: the drawer, or what the processor owes (as the city books it)."""
    return "cash" if method == "cash" else f"receivable:{method}:{brand}"


def business_day(when: datetime) -> date:
    return when.astimezone(JST).date()


def fiscal_year(when: datetime) -> int:
    local = when.astimezone(JST)
    return local.year if local.month >= 4 else local.year - 1


@dataclass
class Paid:
    facility: str
    method: str
    brand: str | None
    amount: int
    refunded: int = 0
    voided: bool = False


@dataclass
class Model:
    """What the ledger must say, computed the simple way."""

    posted: set[tuple[str, str]] = field(default_factory=set)
    payments: dict[str, Paid] = field(default_factory=dict)  # capture txid -> payment
    revenue: Counter[tuple[str, date]] = field(default_factory=Counter)
    days: set[tuple[str, date]] = field(default_factory=set)  # facility days with postings
    accounts: dict[tuple[str, date, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )  # (facility, day, account) -> [captures - voids, debit - credit]
    receipts: Counter[tuple[str, int]] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    staff_refunds: dict[str, tuple[str, int]] = field(default_factory=dict)

    def _book(self, facility: str, when: datetime, account: str, yen: int, count: int) -> None:
        day = business_day(when)
        self.revenue[(facility, day)] -= yen
        self.days.add((facility, day))
        entry = self.accounts[(facility, day, account)]
        entry[0] += count
        entry[1] -= yen

    def capture(self, msg: dict[str, Any], when: datetime) -> str:
        facility, amount = msg["facility_code"], msg["amount_yen"]
        self.payments[msg["transaction_id"]] = Paid(facility, msg["method"], msg["brand"], amount)
        self._book(facility, when, account_of(msg["method"], msg["brand"]), -amount, +1)
        self.receipts[(facility, fiscal_year(when))] += 1
        self.events["captured"] += 1
        return "applied"

    def refund(self, pay: Paid, amount: int, when: datetime) -> str:
        if pay.voided or amount > pay.amount - pay.refunded:
            return "refused"
        pay.refunded += amount
        self._book(pay.facility, when, account_of(pay.method, pay.brand), amount, 0)
        self.events["refunded"] += 1
        return "applied"

    def void(self, pay: Paid, amount: int, when: datetime) -> str:
        if pay.voided or pay.refunded or amount != pay.amount:
            return "refused"
        pay.voided = True
        self._book(pay.facility, when, account_of(pay.method, pay.brand), pay.amount, -1)
        self.events["voided"] += 1
        return "applied"

    def terminal(self, msg: dict[str, Any]) -> str:
        """A terminal message: 'applied', 'copy' (posted before) or 'refused'."""
        when = datetime.fromisoformat(msg["occurred_at"])
        key = (msg["terminal_id"], msg["transaction_id"])
        if msg["kind"] == "capture":
            if key in self.posted:
                return "copy"
            self.posted.add(key)
            return self.capture(msg, when)
        original = (msg.get("original_terminal_id") or msg["terminal_id"], msg["original"])
        if original not in self.posted:
            return "refused"  # overtook its capture: retried later, maybe for ever
        pay = self.payments[msg["original"]]
        if pay.facility != msg["facility_code"]:
            return "refused"
        if key in self.posted:
            return "copy"
        act = self.refund if msg["kind"] == "refund" else self.void
        outcome = act(pay, msg["amount_yen"], when)
        if outcome == "applied":
            self.posted.add(key)
        return outcome

    def staff_refund(self, refund_id: str, txid: str, amount: int, when: datetime) -> str:
        if txid not in self.payments:
            return "refused"  # no such payment (its capture was not posted)
        if refund_id in self.staff_refunds:
            return "copy" if self.staff_refunds[refund_id] == (txid, amount) else "refused"
        outcome = self.refund(self.payments[txid], amount, when)
        if outcome == "applied":
            self.staff_refunds[refund_id] = (txid, amount)
        return outcome


# --- what hypothesis draws -----------------------------------------------------------------

WHEN = st.builds(
    lambda day, minute, utc: (FIRST_DAY + timedelta(days=day, minutes=minute)).astimezone(
        UTC if utc else JST
    ),
    st.integers(0, 1),
    st.integers(0, 24 * 60 - 1),
    st.booleans(),
)
"""A moment on 2027-03-31 or 04-01 in Tokyo, sometimes written in UTC (the previous day)."""


@st.composite
def captures(draw: st.DrawFn) -> list[dict[str, Any]]:
    found = []
    for n in range(draw(st.integers(1, 3))):
        terminal = draw(st.sampled_from(sorted(TERMINALS)))
        method, brand = draw(st.sampled_from(MEANS))
        msg = {
            "transaction_id": f"C{n}",
            "terminal_id": terminal,
            "facility_code": TERMINALS[terminal],
            "kind": "capture",
            "method": method,
            "brand": brand,
            "amount_yen": draw(st.sampled_from([200, 300, 450, 750]) | st.integers(1, 20_000)),
            "item": "証明書等発行手数料",
            "occurred_at": draw(WHEN).isoformat(),
        }
        if method == "credit":
            msg["card"] = CARD
        found.append(msg)
    return found


def undoing(
    draw: Callable[..., Any], n: int, capture: dict[str, Any], model: Model, kind: str
) -> dict[str, Any]:
    """A refund or void of ``capture``, from its terminal or another one (maybe at another
    facility), for an amount that may be too much."""
    terminal = draw(
        st.sampled_from([capture["terminal_id"]]) | st.sampled_from(sorted(TERMINALS)),
        label="from terminal",
    )
    pay = model.payments.get(capture["transaction_id"])
    left = capture["amount_yen"] - (pay.refunded if pay else 0)
    if kind == "refund":
        amount = draw(
            st.sampled_from([max(left, 1), capture["amount_yen"] + 1])
            | st.integers(1, capture["amount_yen"]),
            label="refund",
        )
    else:
        whole = capture["amount_yen"]
        amount = draw(st.sampled_from([whole, whole, whole, whole + 1]), label="void")
    msg = {
        **{k: capture[k] for k in ("method", "brand", "item")},
        "transaction_id": f"{kind[0].upper()}{n}",
        "terminal_id": terminal,
        "facility_code": TERMINALS[terminal],
        "kind": kind,
        "amount_yen": amount,
        "occurred_at": draw(WHEN).isoformat(),
        "original_transaction_id": capture["transaction_id"],
    }
    if terminal != capture["terminal_id"]:
        msg["original_terminal_id"] = capture["terminal_id"]
    return msg


def envelope(msg: dict[str, Any]) -> Envelope[TerminalTransactionV1]:
    data = TerminalTransactionV1.model_validate(msg)
    return Envelope.new(data, source=f"/terminals/{data.terminal_id}", id=data.message_id)


def for_model(msg: dict[str, Any]) -> dict[str, Any]:
    return {**msg, "original": msg.get("original_transaction_id")}


# --- the ledger as the database holds it ---------------------------------------------------


async def fresh_payments_schema(database_url: str, schema: str) -> asyncpg.Pool:
    pool = await rdb.create_pool(database_url, schema, min_size=1, max_size=2)
    await rdb.migrate(pool, schema, migrations_for(definition("payments")))
    for facility in TERMINALS.values():
        await registry.register_terminal(pool, facility)
    registered = {r.terminal_id for r in await terminals.list_terminals(pool)}
    assert registered == set(TERMINALS)
    return pool


async def outbox_events(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox"))


async def check_invariants(pool: asyncpg.Pool) -> None:
    await assert_ledger_balances(pool)
    over = await pool.fetch(
        """SELECT p.payment_id FROM payments p
           LEFT JOIN (SELECT payment_id, sum(amount_yen) AS total FROM refunds
                      GROUP BY payment_id) r USING (payment_id)
           WHERE p.refunded_yen > p.amount_yen OR p.refunded_yen <> coalesce(r.total, 0)
              OR (p.voided AND p.refunded_yen > 0)"""
    )
    assert over == [], "a payment refunded above its capture, or refunds that do not add up"


async def check_against(pool: asyncpg.Pool, model: Model) -> None:
    await check_invariants(pool)
    rows = await settlements.revenue_by_day(pool, None, date(2027, 3, 30), date(2027, 4, 2))
    revenue = {(r["facility_code"], r["business_date"]): int(r["gross_yen"]) for r in rows}
    assert revenue == {day: model.revenue[day] for day in model.days}
    assert all(int(r["fee_yen"]) == 0 and r["net_yen"] == r["gross_yen"] for r in rows)
    async with pool.acquire() as conn:
        for facility, day in model.days:
            wanted = {
                account: (count, amount)
                for (f, d, account), (count, amount) in model.accounts.items()
                if (f, d) == (facility, day)
            }
            book = await settlements.ledger_day(conn, facility, day, ACCOUNTS)
            assert {a: (v.count, v.amount_yen) for a, v in book.items()} == wanted
    serials = defaultdict(list)
    for r in await pool.fetch("SELECT facility_code, fiscal_year, serial FROM receipts"):
        serials[(r["facility_code"], r["fiscal_year"])].append(r["serial"])
    assert {k: sorted(v) for k, v in serials.items()} == {
        k: list(range(1, n + 1)) for k, n in model.receipts.items()
    }
    types = Counter(
        r["ce_type"].rsplit(".", 2)[-2].removeprefix("Payment").lower()
        for r in await pool.fetch("SELECT ce_type FROM outbox")
    )
    assert types == +model.events
    for r in await pool.fetch(
        "SELECT payload FROM outbox WHERE ce_type LIKE '%PaymentRefunded.v1'"
    ):
        refund = json.loads(r["payload"])
        assert 0 < refund["amount_yen"] <= refund["refunded_total_yen"]


async def deliver(pool: asyncpg.Pool, known: dict[str, str], msgs: list[dict[str, Any]]) -> bool:
    """Apply a run of terminal messages in one transaction; False when the handler refused
    one of them (the transaction rolled back). Errors other than the rules' propagate."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            await ingestion.record_terminal_transactions(conn, [envelope(m) for m in msgs], known)
    except (PaymentError, OriginalNotYetPosted):
        return False
    return True


counter = itertools.count()


@PROFILE
@given(data=st.data())
async def test_the_ledger_balances_and_matches_a_simple_model_whatever_the_traffic(
    database_url: str, namespace: str, db: asyncpg.Connection, data: st.DataObject
) -> None:
    pool = await fresh_payments_schema(database_url, f"{namespace}_ledger{next(counter)}")
    try:
        model, known = Model(), dict[str, str]()
        planned = data.draw(captures(), label="captures")
        sent: list[dict[str, Any]] = []
        for step in range(data.draw(st.integers(4, 16), label="steps")):
            if data.draw(st.integers(0, 5), label="staff?") == 0:
                await staff_refund(data, pool, model, planned, step)
            else:
                msgs = [
                    terminal_message(data, step * 10 + i, planned, sent, model)
                    for i in range(data.draw(st.integers(1, 3), label="batch size"))
                ]
                sent.extend(msgs)
                trial = copy.deepcopy(model)
                outcomes = [trial.terminal(for_model(m)) for m in msgs]
                before = await outbox_events(pool)
                if await deliver(pool, known, msgs):
                    assert "refused" not in outcomes, f"accepted what the rules refuse: {msgs}"
                    assert await outbox_events(pool) - before == outcomes.count("applied")
                    model = trial
                else:
                    assert "refused" in outcomes, f"refused a valid run: {msgs}"
                    for msg in msgs:  # as the consumer's bisection ends: one at a time
                        wanted = model.terminal(for_model(msg))
                        before = await outbox_events(pool)
                        applied = await deliver(pool, known, [msg])
                        assert applied == (wanted != "refused"), (msg, wanted)
                        assert await outbox_events(pool) - before == (wanted == "applied")
            await check_invariants(pool)
        await check_against(pool, model)
    finally:
        await pool.close()


def terminal_message(
    data: st.DataObject,
    n: int,
    planned: list[dict[str, Any]],
    sent: list[dict[str, Any]],
    model: Model,
) -> dict[str, Any]:
    kind = data.draw(
        st.sampled_from(["capture", "capture", "refund", "void", "again"]), label="message"
    )
    if kind == "again" and sent:
        return data.draw(st.sampled_from(sent), label="copy of")
    capture = data.draw(st.sampled_from(planned), label="capture")
    if kind in ("capture", "again"):
        return capture
    return undoing(data.draw, n, capture, model, kind)


async def staff_refund(
    data: st.DataObject, pool: asyncpg.Pool, model: Model, planned: list[dict[str, Any]], n: int
) -> None:
    """A refund at the counter (返金), sometimes a retried request (the same refund id)."""
    retry = model.staff_refunds and data.draw(st.booleans(), label="retry?")
    if retry:
        refund_id = data.draw(st.sampled_from(sorted(model.staff_refunds)), label="retried")
        txid, amount = model.staff_refunds[refund_id]
    else:
        refund_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"staff/{n}"))
        txid = data.draw(st.sampled_from(planned), label="refunded")["transaction_id"]
        amount = data.draw(st.integers(1, 21_000), label="amount")
    capture = next(c for c in planned if c["transaction_id"] == txid)
    posted = await pool.fetchval(
        "SELECT payment_id FROM terminal_transactions WHERE transaction_id = $1", txid
    )
    payment_id = posted or uuid.uuid4()  # never captured: a payment that does not exist
    when = data.draw(WHEN, label="at")
    wanted = model.staff_refund(refund_id, txid, amount, when)
    before = await outbox_events(pool)
    try:
        result = await refunds.refund_by_staff(
            pool, payment_id, amount, "clerk01", when, uuid.UUID(refund_id)
        )
    except PaymentError:
        assert wanted == "refused", (txid, amount)
        return
    assert wanted != "refused", (txid, amount)
    assert result.replayed == (wanted == "copy")
    assert result.refunded_total_yen <= capture["amount_yen"]
    assert await outbox_events(pool) - before == (wanted == "applied")


# --- online payments: provider notices in random order, with expiry --------------------------

TTL = timedelta(minutes=30)
OPENED = datetime(2027, 3, 31, 23, 40, tzinfo=JST)
"""Requests open 20 minutes before the new fiscal year and expire 10 minutes into it."""


@dataclass
class Request:
    """What the model knows of a payment request."""

    reference: str
    amount: int
    expires_at: datetime
    status: str = "pending"


def expected_reasons(request: Request, amount: int, now: datetime) -> list[str]:
    """The rules, written the simple way: captured always; why it needs staff, if it does."""
    reasons = []
    if request.status == "paid":
        reasons.append("paid_twice")
    elif request.status == "expired" or now >= request.expires_at:
        reasons.append("paid_after_expiry")
    if amount != request.amount:
        reasons.append("other_amount")
    return reasons


async def open_requests(pool: asyncpg.Pool, amounts: list[int]) -> list[Request]:
    requests = []
    async with pool.acquire() as conn:
        await terminals.sync_facilities(conn)
        for amount in amounts:
            fee = Envelope.new(
                ApplicationPaymentRequestedV1(
                    application_id=uuid.uuid4(),
                    procedure_code="JUMINHYO",
                    amount_yen=amount,
                    fee_item="住民票の写し",
                    facility_code="shiminka",
                    requested_at=OPENED,
                ),
                source="/cityhall/applications",
            )
            async with conn.transaction():
                await online.create_payment_request(conn, fee, TTL.total_seconds())
            row = await payment_requests.payment_request_of(conn, fee.data.application_id)
            assert row is not None
            requests.append(Request(row["reference"], amount, OPENED + TTL))
    return requests


@PROFILE
@given(data=st.data())
async def test_provider_notices_in_any_order_are_recorded_once_each_and_balance(
    database_url: str, namespace: str, db: asyncpg.Connection, data: st.DataObject
) -> None:
    pool = await fresh_payments_schema(database_url, f"{namespace}_online{next(counter)}")
    try:
        amounts = data.draw(st.lists(st.sampled_from([300, 450, 750]), min_size=1, max_size=3))
        requests = await open_requests(pool, amounts)
        now = OPENED
        sent: list[ProviderPaymentConfirmation] = []
        outcomes: dict[str, tuple[uuid.UUID, list[str]]] = {}  # notice id -> first outcome
        for step in range(data.draw(st.integers(2, 12), label="steps")):
            now += timedelta(minutes=data.draw(st.integers(0, 15), label="minutes pass"))
            if data.draw(st.integers(0, 4), label="expiry job?") == 0:
                await online.expire_payment_requests(pool, now)
                for r in requests:
                    if r.status == "pending" and r.expires_at <= now:
                        r.status = "expired"
                continue
            if sent and data.draw(st.booleans(), label="again?"):
                notice = data.draw(st.sampled_from(sent), label="the same notice")
            else:
                request = data.draw(st.sampled_from(requests), label="request")
                amount = data.draw(st.sampled_from([request.amount, request.amount, 200]))
                notice = ProviderPaymentConfirmation(
                    event_id=f"evt_s{step}",
                    reference=request.reference,
                    amount_yen=amount,
                    method="qr",
                    brand="PayPay",
                    paid_at=now - timedelta(minutes=data.draw(st.integers(0, 20), label="paid")),
                )
                sent.append(notice)
            request = next(r for r in requests if r.reference == notice.reference)
            before = await outbox_events(pool)
            done = await online.confirm_online_payment(pool, notice, now)
            if notice.event_id in outcomes:  # the same notice: its first outcome, no change
                assert done.replayed
                assert (done.payment_id, [r.value for r in done.reasons]) == outcomes[
                    notice.event_id
                ]
                assert await outbox_events(pool) == before
            else:
                wanted = expected_reasons(request, notice.amount_yen, now)
                assert [r.value for r in done.reasons] == wanted, (request, notice, now)
                assert await outbox_events(pool) - before == (2 if wanted else 1)
                outcomes[notice.event_id] = (done.payment_id, wanted)
                if not wanted:
                    request.status = "paid"
            await check_invariants(pool)

        # Each distinct notice is one payment, one capture posting, one PaymentCaptured; the
        # money shows once in revenue, whatever the order, repeats and expiry.
        distinct = {n.event_id: n for n in sent}
        taken = sum(n.amount_yen for n in distinct.values())
        revenue = await pool.fetchval(
            "SELECT coalesce(sum(credit_yen - debit_yen), 0) FROM ledger_entries "
            "WHERE account = 'revenue'"
        )
        assert revenue == taken
        assert await pool.fetchval("SELECT count(*) FROM payments") == len(distinct)
        flagged = [pid for pid, reasons in outcomes.values() if reasons]
        queued = await pool.fetch("SELECT payment_id FROM payment_attention")
        assert sorted(r["payment_id"] for r in queued) == sorted(flagged)
        types = Counter(
            r["ce_type"].rsplit(".", 2)[-2] for r in await pool.fetch("SELECT ce_type FROM outbox")
        )
        assert types["PaymentCaptured"] == len(distinct)
        assert types["PaymentNeedsAttention"] == len(flagged)
        for r in requests:
            row = await pool.fetchrow(
                "SELECT status, payment_id FROM payment_requests WHERE reference = $1",
                r.reference,
            )
            assert row["status"] == r.status
            settled = [pid for pid, reasons in outcomes.values() if not reasons]
            assert (row["payment_id"] in settled) == (r.status == "paid")
        receipts = await pool.fetch("SELECT fiscal_year, serial FROM receipts")
        numbered = Counter((r["fiscal_year"], r["serial"]) for r in receipts)
        assert all(n == 1 for n in numbered.values())  # no receipt number given twice
    finally:
        await pool.close()
