"""The ledger's rules (複式簿記): accounts, balanced postings (仕訳) for captures, refunds,
voids and settlements, and the daily reconciliation (調定) of a settlement batch against it.

Pure: no I/O, no framework, like ``domain``; ``store/postings.py`` writes what these build.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from contracts.payments import PaymentMethod, SettlementDifference, SettlementLine
from services.payments.domain import PaymentState, business_date


class PostingKind(StrEnum):
    CAPTURE = "capture"
    REFUND = "refund"
    VOID = "void"
    SETTLEMENT = "settlement"


REVENUE = "revenue"
"""収入: gross revenue of the facility (the posting carries the facility)."""


PROCESSOR_FEE = "processor_fee"
"""支払手数料: what the processor kept before remitting (繰替払い)."""


BANK = "bank"
"""指定金融機関: money remitted by the processor or deposited from the cash drawer."""


@functools.lru_cache(maxsize=1024)
def receivable_account(method: PaymentMethod, brand: str | None) -> str:
    """Where captured money waits: the cash drawer, or what a processor owes (未収金)."""
    if method is PaymentMethod.CASH:
        return "cash"
    label = re.sub(r"\s+", "_", (brand or "unknown").strip())
    return f"receivable:{method.value}:{label}"


@dataclass(frozen=True)
class Entry:
    account: str
    debit_yen: int = 0
    credit_yen: int = 0


@dataclass(frozen=True)
class Posting:
    """A balanced set of ledger entries (仕訳)."""

    posting_id: uuid.UUID
    kind: PostingKind
    facility_code: str
    business_date: date
    entries: tuple[Entry, ...]
    payment_id: uuid.UUID | None = None
    reverses: uuid.UUID | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        debits = credits = 0
        for e in self.entries:  # one loop, no generators: a posting is made per capture
            debit, credit = e.debit_yen, e.credit_yen
            if (debit > 0) == (credit > 0) or debit < 0 or credit < 0:
                raise ValueError(f"an entry is a debit or a credit, not both: {e}")
            debits += debit
            credits += credit
        if debits != credits or debits == 0:
            raise ValueError(f"unbalanced posting: debits {debits} <> credits {credits}")


def capture_posting(
    payment_id: uuid.UUID,
    facility_code: str,
    method: PaymentMethod,
    brand: str | None,
    amount_yen: int,
    occurred_at: datetime,
) -> Posting:
    """Dr receivable (or cash) / Cr revenue, gross."""
    return Posting(
        posting_id=uuid.uuid4(),
        kind=PostingKind.CAPTURE,
        facility_code=facility_code,
        business_date=business_date(occurred_at),
        entries=(
            Entry(receivable_account(method, brand), debit_yen=amount_yen),
            Entry(REVENUE, credit_yen=amount_yen),
        ),
        payment_id=payment_id,
    )


def refund_posting(payment: PaymentState, amount_yen: int, occurred_at: datetime) -> Posting:
    """Dr revenue / Cr receivable: revenue given back."""
    return Posting(
        posting_id=uuid.uuid4(),
        kind=PostingKind.REFUND,
        facility_code=payment.facility_code,
        business_date=business_date(occurred_at),
        entries=(
            Entry(REVENUE, debit_yen=amount_yen),
            Entry(receivable_account(payment.method, payment.brand), credit_yen=amount_yen),
        ),
        payment_id=payment.payment_id,
    )


def reversal_of(original: Posting, kind: PostingKind, occurred_at: datetime) -> Posting:
    """The entries of ``original`` with debits and credits swapped (a correction, 訂正)."""
    return Posting(
        posting_id=uuid.uuid4(),
        kind=kind,
        facility_code=original.facility_code,
        business_date=business_date(occurred_at),
        entries=tuple(Entry(e.account, e.credit_yen, e.debit_yen) for e in original.entries),
        payment_id=original.payment_id,
        reverses=original.posting_id,
    )


# --- daily reconciliation (調定) ------------------------------------------------------------


@dataclass(frozen=True)
class LedgerDay:
    """What the ledger holds for one method and brand on a facility's day."""

    count: int
    amount_yen: int


def reconcile(
    lines: list[SettlementLine], ledger: dict[str, LedgerDay]
) -> list[SettlementDifference]:
    """The lines of a settlement batch that disagree with the ledger (keyed by account).

    Only the methods and brands in the batch are compared: each processor settles its own.
    """
    differences = []
    for line in lines:
        book = ledger.get(receivable_account(line.method, line.brand), LedgerDay(0, 0))
        if (book.count, book.amount_yen) != (line.count, line.amount_yen):
            differences.append(
                SettlementDifference(
                    method=line.method,
                    brand=line.brand,
                    ledger_count=book.count,
                    reported_count=line.count,
                    ledger_amount_yen=book.amount_yen,
                    reported_amount_yen=line.amount_yen,
                    count_difference=line.count - book.count,
                    amount_difference_yen=line.amount_yen - book.amount_yen,
                )
            )
    return differences


def settlement_posting(
    facility_code: str, day: date, lines: list[SettlementLine]
) -> Posting | None:
    """The processor's fee and the remittance clear what it owed (繰替払い): Dr fee, Dr bank /
    Cr receivable. Revenue is untouched: it stays gross. None when nothing moves."""
    entries: list[Entry] = []
    for line in lines:
        account = receivable_account(line.method, line.brand)
        if line.fee_yen:
            entries.append(Entry(PROCESSOR_FEE, debit_yen=line.fee_yen))
        if line.amount_yen - line.fee_yen:
            entries.append(Entry(BANK, debit_yen=line.amount_yen - line.fee_yen))
        if line.amount_yen:
            entries.append(Entry(account, credit_yen=line.amount_yen))
    if not entries:
        return None
    return Posting(
        posting_id=uuid.uuid4(),
        kind=PostingKind.SETTLEMENT,
        facility_code=facility_code,
        business_date=day,
        entries=tuple(entries),
    )
