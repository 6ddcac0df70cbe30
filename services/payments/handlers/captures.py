"""Capturing money, whether a terminal or the online provider took it: the payment, its
numbered receipt and its ledger posting."""

from __future__ import annotations

import asyncpg

from services.payments import ledger
from services.payments.store import payments


def posting_of(capture: payments.NewCapture) -> ledger.Posting:
    return ledger.capture_posting(
        capture.payment_id,
        capture.facility_code,
        capture.method,
        capture.brand,
        capture.amount_yen,
        capture.occurred_at,
    )


async def record_capture(conn: asyncpg.Connection, capture: payments.NewCapture) -> str:
    """Payment, receipt number and balanced ledger posting; returns the receipt number."""
    return await payments.record_capture(conn, capture, posting_of(capture))
