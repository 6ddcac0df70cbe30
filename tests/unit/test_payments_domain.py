"""Payments' rules, without servers: fiscal years, receipts, refunds, voids, postings."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import pytest

from contracts.payments import (
    AttentionReason,
    PaymentMethod,
    SettlementLine,
    TerminalTransactionKind,
    TerminalTransactionVersion,
)
from services.payments import domain, errors, ledger


def payment(amount: int = 750, refunded: int = 0, voided: bool = False) -> domain.PaymentState:
    return domain.PaymentState(
        payment_id=uuid.uuid4(),
        facility_code="shiminka",
        method=PaymentMethod.QR,
        brand="PayPay",
        amount_yen=amount,
        refunded_yen=refunded,
        voided=voided,
    )


@pytest.mark.parametrize(
    ("moment", "year"),
    [
        ("2026-04-01T00:00:00+09:00", 2026),
        ("2027-03-31T23:59:59+09:00", 2026),
        ("2026-03-31T15:30:00+00:00", 2026),  # 00:30 on 1 April in Tokyo
        ("2026-03-31T14:59:59+00:00", 2025),
    ],
)
def test_the_fiscal_year_runs_april_to_march_in_tokyo(moment: str, year: int) -> None:
    assert domain.fiscal_year(datetime.fromisoformat(moment)) == year


def test_a_naive_time_has_no_fiscal_year() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        domain.fiscal_year(datetime(2026, 4, 1))


def test_receipt_numbers_name_facility_year_and_serial() -> None:
    assert domain.receipt_number("shiminka", 2026, 123) == "shiminka-2026-000123"


def test_a_refund_up_to_the_capture_is_allowed() -> None:
    assert domain.decide_refund(payment(750, refunded=500), 250) == 750


def test_refund_above_capture_is_refused() -> None:
    with pytest.raises(errors.RefundExceedsCapture, match="250 of 750 yen"):
        domain.decide_refund(payment(750, refunded=500), 251)


def test_a_voided_payment_cannot_be_refunded() -> None:
    with pytest.raises(errors.PaymentAlreadyVoided):
        domain.decide_refund(payment(voided=True), 1)


def test_a_void_cancels_the_whole_untouched_capture_only() -> None:
    domain.decide_void(payment(750), 750)
    with pytest.raises(errors.VoidNotAllowed, match="whole capture"):
        domain.decide_void(payment(750), 300)
    with pytest.raises(errors.VoidNotAllowed, match="has refunds"):
        domain.decide_void(payment(750, refunded=100), 750)


def test_a_capture_posting_debits_the_processor_and_credits_revenue_gross() -> None:
    p = ledger.capture_posting(
        uuid.uuid4(),
        "shiminka",
        PaymentMethod.EMONEY,
        "交通系IC",
        300,
        datetime.fromisoformat("2026-11-24T23:30:00+09:00"),
    )
    assert [(e.account, e.debit_yen, e.credit_yen) for e in p.entries] == [
        ("receivable:emoney:交通系IC", 300, 0),
        ("revenue", 0, 300),
    ]
    assert str(p.business_date) == "2026-11-24"


def test_a_reversal_swaps_debits_and_credits() -> None:
    when = datetime.fromisoformat("2026-11-24T10:00:00+09:00")
    original = ledger.capture_posting(uuid.uuid4(), "shiminka", PaymentMethod.CASH, None, 450, when)
    reversal = ledger.reversal_of(original, ledger.PostingKind.VOID, when)
    assert reversal.reverses == original.posting_id
    assert [(e.account, e.debit_yen, e.credit_yen) for e in reversal.entries] == [
        ("cash", 0, 450),
        ("revenue", 450, 0),
    ]


def test_an_unbalanced_posting_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        ledger.Posting(
            posting_id=uuid.uuid4(),
            kind=ledger.PostingKind.CAPTURE,
            facility_code="shiminka",
            business_date=datetime(2026, 11, 24).date(),
            entries=(ledger.Entry("cash", debit_yen=300), ledger.Entry("revenue", credit_yen=299)),
        )


def line(**values: object) -> SettlementLine:
    return SettlementLine.model_validate(
        {"method": "qr", "brand": "PayPay", "count": 2, "amount_yen": 600} | values
    )


def test_a_settlement_line_matching_the_ledger_has_no_difference() -> None:
    book = {"receivable:qr:PayPay": ledger.LedgerDay(2, 600)}
    assert ledger.reconcile([line()], book) == []


def test_a_settlement_line_differing_from_the_ledger_reports_reported_minus_ledger() -> None:
    book = {"receivable:qr:PayPay": ledger.LedgerDay(2, 600)}
    [diff] = ledger.reconcile([line(count=1, amount_yen=300)], book)
    assert (diff.count_difference, diff.amount_difference_yen) == (-1, -300)
    [unknown] = ledger.reconcile([line(brand="WAON", method="emoney")], book)
    assert (unknown.ledger_count, unknown.reported_amount_yen) == (0, 600)


def test_the_processor_fee_is_recorded_apart_and_revenue_stays_gross() -> None:
    posting = ledger.settlement_posting(
        "shiminka", date(2026, 11, 24), [line(amount_yen=300, fee_yen=9)]
    )
    assert posting is not None
    assert [(e.account, e.debit_yen, e.credit_yen) for e in posting.entries] == [
        ("processor_fee", 9, 0),
        ("bank", 291, 0),
        ("receivable:qr:PayPay", 0, 300),
    ]
    assert all(e.account != ledger.REVENUE for e in posting.entries)


def version(**changes: object) -> TerminalTransactionVersion:
    base = TerminalTransactionVersion(
        kind=TerminalTransactionKind.CAPTURE,
        method=PaymentMethod.QR,
        brand="PayPay",
        amount_yen=300,
        item="住民票の写し",
        occurred_at=datetime.fromisoformat("2026-11-24T10:15:00+09:00"),
    )
    return base.model_copy(update=changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_yen": 450},
        {"method": PaymentMethod.EMONEY, "brand": "交通系IC"},
        {"brand": "d払い"},
        {"item": "戸籍謄本"},
        {"occurred_at": datetime.fromisoformat("2026-12-01T09:02:00+09:00")},
        {"kind": TerminalTransactionKind.REFUND, "item": None, "original_transaction_id": "C0"},
    ],
)
def test_a_repeat_of_a_transaction_id_with_other_content_is_not_the_same(
    changes: dict[str, object],
) -> None:
    assert not domain.same_terminal_transaction(version(), version(**changes))


def test_a_repeat_with_the_same_content_is_the_same_whatever_the_time_offset() -> None:
    in_utc = datetime.fromisoformat("2026-11-24T01:15:00+00:00")
    assert domain.same_terminal_transaction(version(), version(occurred_at=in_utc))


def test_a_refund_repeat_is_compared_by_the_capture_it_undoes() -> None:
    refund = version(kind=TerminalTransactionKind.REFUND, item=None, original_transaction_id="C1")
    assert domain.same_terminal_transaction(refund, refund.model_copy())
    assert not domain.same_terminal_transaction(
        refund, refund.model_copy(update={"original_transaction_id": "C2"})
    )


EXPIRES = datetime.fromisoformat("2026-11-24T09:30:00+09:00")


def fee_request(status: str = "pending", amount: int = 300) -> domain.PaymentRequestState:
    return domain.PaymentRequestState(
        uuid.uuid4(), uuid.uuid4(), "PR-X", "shiminka", "住民票の写し", amount, status, EXPIRES
    )


def test_a_confirmation_in_time_and_in_full_settles_its_request() -> None:
    assert domain.decide_confirmation(fee_request(), 300, EXPIRES - timedelta(seconds=1)) == ()


@pytest.mark.parametrize(
    ("status", "amount", "arrives", "reasons"),
    [
        ("pending", 300, EXPIRES, [AttentionReason.PAID_AFTER_EXPIRY]),  # at expiry is late
        ("expired", 300, EXPIRES - timedelta(hours=1), [AttentionReason.PAID_AFTER_EXPIRY]),
        ("paid", 300, EXPIRES - timedelta(hours=1), [AttentionReason.PAID_TWICE]),
        ("pending", 450, EXPIRES - timedelta(hours=1), [AttentionReason.OTHER_AMOUNT]),
        (
            "expired",
            200,
            EXPIRES + timedelta(days=1),
            [AttentionReason.PAID_AFTER_EXPIRY, AttentionReason.OTHER_AMOUNT],
        ),
    ],
)
def test_a_confirmation_that_cannot_settle_its_request_says_why(
    status: str, amount: int, arrives: datetime, reasons: list[AttentionReason]
) -> None:
    assert list(domain.decide_confirmation(fee_request(status), amount, arrives)) == reasons


def item(decided: bool = False) -> domain.AttentionState:
    return domain.AttentionState(
        uuid.uuid4(), uuid.uuid4(), (AttentionReason.OTHER_AMOUNT,), decided
    )


def test_an_attached_payment_must_keep_exactly_the_fee() -> None:
    domain.decide_attach(item(), payment(450, refunded=150), fee_request())
    with pytest.raises(errors.AttachNotAllowed, match="refund the 150 yen over it first"):
        domain.decide_attach(item(), payment(450), fee_request())
    with pytest.raises(errors.AttachNotAllowed, match="less than the fee"):
        domain.decide_attach(item(), payment(200), fee_request())


def test_a_payment_for_a_paid_request_or_decided_item_is_not_attached() -> None:
    with pytest.raises(errors.AttachNotAllowed, match="paid already"):
        domain.decide_attach(item(), payment(300), fee_request("paid"))
    with pytest.raises(errors.AttentionAlreadyDecided):
        domain.decide_attach(item(decided=True), payment(300), fee_request())


def test_a_refund_decides_an_item_only_when_nothing_is_left() -> None:
    assert domain.decide_attention_refund(item(), payment(450), 150) is False
    assert domain.decide_attention_refund(item(), payment(450, refunded=150), 300) is True
    with pytest.raises(errors.RefundExceedsCapture):
        domain.decide_attention_refund(item(), payment(450), 451)
