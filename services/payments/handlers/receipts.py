"""Printing a receipt (領収書): every print after the first is marked as a copy."""

from __future__ import annotations

import asyncpg

from services.payments import errors
from services.payments.receipts import ReceiptView, render_receipt
from services.payments.store import payments


async def print_receipt(pool: asyncpg.Pool, receipt_number: str) -> str:
    """The receipt as printable HTML; every print after the first is marked as a copy."""
    async with pool.acquire() as conn, conn.transaction():
        row = await payments.print_receipt(conn, receipt_number)
    if row is None:
        raise errors.UnknownReceipt(f"no receipt {receipt_number!r}")
    view = ReceiptView(
        receipt_number=row["receipt_number"],
        facility_name=row["facility_name"],
        item=row["item"],
        amount_yen=int(row["amount_yen"]),
        method=row["method"],
        brand=row["brand"],
        card_last4=row["card_last4"],
        occurred_at=row["occurred_at"],
        refunded_yen=int(row["refunded_yen"]),
        voided=bool(row["voided"]),
    )
    return render_receipt(view, copy=row["earlier_prints"] > 0)
