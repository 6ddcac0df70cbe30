"""The consumer reads a message's delivery count from its JetStream reply subject itself (the
hot path); it must agree with nats-py's own parse of both reply forms."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from services.runtime.consumer import delivery_count

REPLIES = [
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>
    "$JS.ACK.NS_TERMINALS.payments_terminals.3.1042.977.1733300000000000000.12",
    # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>…
    "$JS.ACK._.AHASH.NS_PAYMENTS.reporting_payments.1.55.54.1733300000000000000.0.xyz",
    "$JS.ACK.hub.AHASH.NS_PAYMENTS.reporting_payments.17.55.54.1733300000000000000.0",
]


def message(reply: str) -> Msg:
    client: Any = None
    return Msg(client, subject="ns.payments.captured.v1", reply=reply, data=b"{}")


@pytest.mark.parametrize("reply", REPLIES)
def test_the_delivery_count_is_the_one_nats_py_parses(reply: str) -> None:
    assert delivery_count(message(reply)) == message(reply).metadata.num_delivered


def test_a_message_that_is_not_from_jetstream_is_refused_as_nats_py_refuses_it() -> None:
    with pytest.raises(NotJSMessageError):
        delivery_count(message("_INBOX.abc"))
