"""The runtime's header parsing (each distinct name parsed once) gives what nats-py's own
``Client._parse_header_lines`` gives, on any header block."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from services.runtime.service import _header_names_parsed_once

_header_names_parsed_once()
PATCHED = NatsClient._parse_header_lines
ORIGINAL = PATCHED.__wrapped__  # type: ignore[attr-defined]

CLOUDEVENT = (
    b"ce-specversion: 1.0\r\nce-id: 7f0c\r\nce-source: /cityhall/payments\r\n"
    b"ce-type: jp.koriyama.cityhall.payments.PaymentCaptured.v1\r\n"
    b"ce-time: 2026-12-05T09:00:00+09:00\r\ncontent-type: application/json\r\n"
    b"Nats-Msg-Id: 7f0c\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    b"\r\n\r\n"
)

# Names and values built from the pieces that matter to the parser: separators, every kind
# of whitespace str.isspace knows (ASCII and not), non-ASCII and invalid UTF-8 bytes.
PIECES = [b"ce-id", b"a", b"X", b":", b" ", b"\t", b"\x0b", b"\x1c", b"\r", b"\n", b"\r\n"]
PIECES += [b"\xc2\x85", b"\xe3\x81\x82", b"\xff", b"-", b"0", b"Nats-Msg-Id", b""]
chunks = st.lists(st.sampled_from(PIECES) | st.binary(max_size=4), max_size=12).map(b"".join)
blocks = st.lists(chunks, max_size=8).map(b"\r\n".join)


def test_a_cloudevents_header_block_parses_as_nats_py_parses_it() -> None:
    assert PATCHED(CLOUDEVENT) == ORIGINAL(CLOUDEVENT)
    assert PATCHED(CLOUDEVENT)["ce-time"] == "2026-12-05T09:00:00+09:00"
    assert PATCHED(CLOUDEVENT) == ORIGINAL(CLOUDEVENT)  # again, from the names kept


def test_names_nats_py_skips_are_skipped_every_time() -> None:
    block = b"bad name: 1\r\n\xffname: 2\r\n  ok  :  3 \r\nno colon\r\n"
    assert PATCHED(block) == ORIGINAL(block) == {"ok": "3"}
    assert PATCHED(block) == {"ok": "3"}


@settings(max_examples=500)
@given(blocks)
def test_any_header_block_parses_as_nats_py_parses_it(block: bytes) -> None:
    expected = ORIGINAL(block)
    assert PATCHED(block) == expected
    assert PATCHED(block) == expected  # the second time from the names kept
