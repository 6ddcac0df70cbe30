"""The terminal transaction contract and the facility list."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.envelope import event_examples
from contracts.facilities import FACILITIES, FACILITIES_BY_CODE, FacilityKind, PaidFor
from contracts.payments import (
    FACILITY_CODE_PATTERN,
    TerminalTransactionV1,
    contains_card_number,
    mask_card_numbers,
)
from services.payments import provider_sim
from services.payments.subscribers import mask_card_numbers_in


def test_there_are_34_facilities_with_slug_codes() -> None:
    assert len(FACILITIES) == 34
    assert all(re.match(FACILITY_CODE_PATTERN, f.code) for f in FACILITIES)
    kinds = [f.kind for f in FACILITIES]
    assert kinds.count(FacilityKind.ADMINISTRATIVE_CENTER) == 14
    assert kinds.count(FacilityKind.SPORTS) == 6
    assert kinds.count(FacilityKind.CITY_FACILITY) == 4


def test_civic_affairs_is_shiminka_and_takes_certificate_fees() -> None:
    shiminka = FACILITIES_BY_CODE["shiminka"]
    assert shiminka.name_ja == "市民課"
    assert shiminka.paid_for is PaidFor.CERTIFICATE_FEES


@pytest.mark.parametrize("example", event_examples(TerminalTransactionV1))
def test_the_documented_examples_are_valid(example: dict[str, Any]) -> None:
    TerminalTransactionV1.model_validate(example)


def capture(**changes: Any) -> dict[str, Any]:
    return event_examples(TerminalTransactionV1)[0] | changes


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",  # Luhn-valid Visa test number
        "4111111111111112",  # not Luhn-valid: refused all the same
        "4111 1111 1111 1111",
        "3530-1113-3330-0000",
        "123456789012",  # 12 digits
        "1234567890123456789",  # 19 digits
    ],
)
def test_a_full_card_number_anywhere_is_refused(text: str) -> None:
    assert contains_card_number(f"note {text} end")
    with pytest.raises(ValidationError, match="full card number"):
        TerminalTransactionV1.model_validate(capture(item=f"支払 {text}"))
    with pytest.raises(ValidationError, match="full card number"):
        TerminalTransactionV1.model_validate(capture(pan=text))


@pytest.mark.parametrize("text", ["12345678901", "T01-000123", "2026-11-24T10:15:00+09:00"])
def test_shorter_digit_runs_and_dates_are_not_card_numbers(text: str) -> None:
    assert not contains_card_number(text)


def test_a_credit_capture_carries_a_token_brand_and_last_four() -> None:
    with pytest.raises(ValidationError, match="card: a credit capture"):
        TerminalTransactionV1.model_validate(capture(method="credit", brand="Visa"))
    with pytest.raises(ValidationError, match="last4"):
        TerminalTransactionV1.model_validate(
            capture(method="credit", brand="Visa", card={"token": "tok_12345678", "brand": "Visa"})
        )


def test_cashless_needs_a_brand_and_undoing_needs_the_original() -> None:
    with pytest.raises(ValidationError, match="brand: required"):
        TerminalTransactionV1.model_validate(capture(brand=None))
    with pytest.raises(ValidationError, match="original_transaction_id: required"):
        TerminalTransactionV1.model_validate(capture(kind="refund"))


def test_dead_lettered_bodies_keep_only_the_last_four_digits() -> None:
    masked = mask_card_numbers_in(b'{"item": "4111-1111-1111-1234"}')
    assert masked == b'{"item": "***************1234"}'


@pytest.mark.parametrize(
    "text", ["4111111111111111", "4111 1111 1111 1111", "123456789012", "12345678901", "1" * 20]
)
def test_what_is_masked_is_exactly_what_is_refused(text: str) -> None:
    # One pattern: a run refused as a card number is masked; a longer or shorter run is neither.
    masked = mask_card_numbers(f"note {text} end")
    assert (masked != f"note {text} end") == contains_card_number(text)
    assert not contains_card_number(masked)


def test_the_provider_simulators_notice_ids_never_look_like_card_numbers() -> None:
    # Its ids were hex once: about one in a hundred held a run of 12 digits and was refused.
    ids = {provider_sim.event_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(re.fullmatch(r"evt_[A-Za-z0-9]{16}", i) for i in ids)
    assert not any(contains_card_number(i) for i in ids)
    assert contains_card_number("evt_" + "4111111111111111")  # what the hex ids could be
