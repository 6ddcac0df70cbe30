"""What the reliability scenarios share: a terminal's capture as it goes on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from contracts.payments import terminal_subject
from tests.integration.payments.helpers import terminal_headers, transaction


def capture(
    terminal_id: str, facility: str, n: int, amount_yen: int
) -> tuple[str, bytes, dict[str, str]]:
    """The n-th capture of a run as its terminal publishes it: relative subject, body,
    CloudEvents headers (``Nats-Msg-Id`` = ``<terminal>/<transaction id>``)."""
    payload = transaction(
        terminal_id,
        f"R{n:07d}",
        facility_code=facility,
        method="emoney",
        brand="WAON",
        amount_yen=amount_yen,
        item="プール利用料",
        occurred_at=datetime.now(UTC).isoformat(),
    )
    body = json.dumps(payload, ensure_ascii=False).encode()
    return terminal_subject(facility, terminal_id), body, terminal_headers(payload)
