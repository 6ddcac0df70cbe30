"""The at-rest scanner finds what it must (so the final scan could fail) and stays quiet on the
digit runs the platform writes all day (so it fails only on a leak)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.integration.applications.jpki import CardCA
from tests.security.scanner import (
    SENT_MY_NUMBERS,
    AtRestScan,
    ScanningLogHandler,
    find_sensitive,
    is_card_number,
)

# Brands' published test numbers (Luhn-valid), none of them in SENT_VALUES.
VISA, MASTERCARD, MC_2_SERIES = "4012888888881881", "5555555555554444", "2223003122003222"
JCB, AMEX, DINERS, DISCOVER = (
    "3566002020360505",
    "378282246310005",
    "30569309025904",
    "6011000990139424",
)


def kinds(data: str | bytes) -> list[str]:
    return [hit.kind for hit in find_sensitive(data)]


@pytest.mark.parametrize("pan", [VISA, MASTERCARD, MC_2_SERIES, JCB, AMEX, DINERS, DISCOVER])
def test_a_full_card_number_of_each_brand_is_found(pan: str) -> None:
    assert is_card_number(pan)
    assert kinds(f"note {pan} end") == ["card number"]


@pytest.mark.parametrize(
    "text",
    [
        "4012 8888 8888 1881",
        "4012-8888-8888-1881",
        "3782 822463 10005",  # Amex as printed: 4-6-5
        "3056 930902 5904",  # Diners: 4-6-4
        '{"item": "4012888888881881", "amount_yen": 300}',
        '{"item": "card 4012 8888 8888 1881 300 yen"}',  # followed by an amount
        "pan=4012888888881881",
        "2026-11-24 4012888888881881",
        "Cityhall-Dlq-Reason: handler failed: 4012888888881881",
    ],
)
def test_a_card_number_is_found_plain_spaced_dashed_and_in_json(text: str) -> None:
    assert kinds(text) == ["card number"]


def test_a_card_number_beside_a_traceparent_is_still_found() -> None:
    text = '"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "pan": '
    assert kinds(text + '"4242 4242 4242 4242"') == ["card number"]


def test_a_card_number_is_found_in_bytes() -> None:
    body = json.dumps({"card": {"token": VISA}}).encode() + b"\x00\xff binary tail"
    assert kinds(body) == ["card number"]


def test_the_excerpt_is_masked_and_says_where() -> None:
    scan = AtRestScan(current_test="tests/x.py::test_y")
    scan.scan("t1_payments.payments", f'{{"note": "{VISA}"}}')
    [finding] = scan.findings
    assert (finding.test, finding.where, finding.kind) == (
        "tests/x.py::test_y",
        "t1_payments.payments",
        "card number",
    )
    assert VISA not in str(finding)
    assert "************1881" in finding.excerpt


@pytest.mark.parametrize(
    "text",
    [
        "************1881",
        "**** **** **** 1881",
        "401288******1881",  # first six and last four
        '{"card": {"token": "tok_abcdefgh", "brand": "Visa", "last4": "1881"}}',
        "4012888888881882",  # Luhn fails
        "1234567890123452",  # Luhn holds, no brand starts with 1
        "94012888888881881",  # part of a longer run
        "40128888888818810000",  # 20 digits
        "a4012888888881881",  # glued to letters: a hex id or a token
        "trace 0af7651916cd43dd8448eb211c80319c span b7ad6b7169203331",
    ],
)
def test_masked_invalid_or_embedded_runs_are_not_card_numbers(text: str) -> None:
    assert kinds(text) == []


@pytest.mark.parametrize(
    "text",
    [
        str(uuid.UUID("12345678-1234-4234-8234-401288888888")),
        "a1b2c3d4-4012-4888-8888-401288888888",
        "1764000000000",  # epoch ms
        "1764000000000000",  # epoch µs
        "1764000000000000000",  # epoch ns (JetStream ack subjects)
        "$JS.ACK.T1_TERMINALS.payments_terminals.1.3000.3000.1764000000000000000.0",
        "2026-11-24T10:15:00.123456+09:00",
        "2026-11-24 10:15:00",
        "20261124101500",
        "shiminka-2026-000001",
        "shiminka-2026-000001 4012",
        '{"amount_yen": 300, "gross_yen": 1234567890, "fee_yen": 9}',
        "1,234,567,890,123 yen",
        "stream seq 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
        "024-924-2111",  # 郡山市役所's phone number
        "072036",  # Koriyama's local government code
        "0000000015 00000 n \n0000000079 00000 n ",  # a PDF's xref table
        # a traceparent whose random span id is all decimal digits (a Luhn-valid Visa number)
        '"traceparent": "00-0af7651916cd43dd8448eb211c80319c-4111111111111111-02"',
    ],
)
def test_ids_timestamps_receipts_and_amounts_are_not_findings(text: str) -> None:
    assert kinds(text) == []


MY_NUMBER = "111111111118"  # a valid check digit, not one the tests send


@pytest.mark.parametrize(
    "text",
    [
        f'{{"my_number": "{MY_NUMBER}"}}',
        f"myNumber={MY_NUMBER}",
        f'{{"kojin_bango": "{MY_NUMBER}"}}',
        f"個人番号: {MY_NUMBER}",
        "マイナンバー 1111 1111 1118",
    ],
)
def test_a_my_number_next_to_a_key_naming_it_is_found(text: str) -> None:
    assert kinds(text) == ["My Number"]


@pytest.mark.parametrize("number", SENT_MY_NUMBERS)
def test_a_my_number_the_tests_sent_is_found_without_a_key(number: str) -> None:
    assert kinds(f'{{"hittosha": "{number}"}}') == ["sent value"]
    assert kinds(f"x{number}y") == ["sent value"]  # verbatim, even glued to letters


def test_a_bare_12_digit_run_or_a_wrong_check_digit_is_not_a_my_number() -> None:
    assert kinds(f"seq {MY_NUMBER}") == []  # no key: one 12-digit run in ten passes the check
    assert kinds('{"my_number": "123456789012"}') == []  # check digit wrong


def test_a_my_number_inside_a_pem_certificate_is_found() -> None:
    ca = CardCA("Scanner CA")
    signer = ca.issue(extra=[x509.NameAttribute(NameOID.SERIAL_NUMBER, MY_NUMBER)])
    pem = signer.cert.public_bytes(encoding=_pem()).decode()
    assert MY_NUMBER not in pem  # base64: a text search alone would miss it
    assert kinds(json.dumps({"certificate_chain": [pem]})) == ["certificate subject"]
    plain = ca.issue().cert.public_bytes(encoding=_pem()).decode()
    assert kinds(plain) == []


def _pem() -> object:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def test_the_log_handler_scans_messages_and_extra_fields() -> None:
    scan = AtRestScan(current_test="t")
    handler = ScanningLogHandler(scan)
    logger = logging.getLogger("tests.scanner")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refused", extra={"reason": f"body: {VISA}"})
        logger.warning("plain text, nothing here")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert scan.log_records == 2
    [finding] = scan.findings
    assert finding.where == "log record tests.scanner"
    assert finding.kind == "card number"
