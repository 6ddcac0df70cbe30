"""Receipt rendering: the Japanese era on paper, Asia/Tokyo dates, the copy mark."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.payments.receipts import ReceiptView, render_receipt, wareki


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        ("2026-11-24T10:00:00+09:00", "令和8年11月24日"),
        ("2019-05-01T00:00:00+09:00", "令和元年5月1日"),
        ("2026-03-31T15:30:00+00:00", "令和8年4月1日"),  # already 1 April in Tokyo
    ],
)
def test_receipts_show_the_date_in_the_japanese_era(moment: str, shown: str) -> None:
    assert wareki(datetime.fromisoformat(moment)) == shown


def view(**changes: object) -> ReceiptView:
    values: dict[str, object] = {
        "receipt_number": "shiminka-2026-000001",
        "facility_name": "市民課",
        "item": "住民票の写し",
        "amount_yen": 300,
        "method": "cash",
        "brand": None,
        "card_last4": None,
        "occurred_at": datetime.fromisoformat("2026-11-24T10:00:00+09:00"),
        "refunded_yen": 0,
        "voided": False,
    }
    values.update(changes)
    return ReceiptView(**values)  # type: ignore[arg-type]


def test_a_voided_payment_s_receipt_says_so() -> None:
    html = render_receipt(view(voided=True), copy=False)
    assert "取消済み" in html
    assert "現金" in html


def test_only_a_reprint_carries_the_copy_mark() -> None:
    assert "再発行" not in render_receipt(view(), copy=False)
    assert "再発行（写）" in render_receipt(view(), copy=True)
