"""Receipts (領収書) as printable HTML: facility, item, amount, method and date.

Rendered with Jinja2 (auto-escaped). The first print is the original; every later print is
marked 再発行（写）, a copy, so two originals of one payment never exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import jinja2

from services.payments.domain import TOKYO

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("services.payments", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)

METHOD_LABELS = {
    "qr": "QRコード決済",
    "emoney": "電子マネー",
    "credit": "クレジットカード",
    "cash": "現金",
}


def wareki(when: datetime) -> str:
    """The date in the Japanese era (和暦), for paper: ``令和8年11月24日``."""
    local = when.astimezone(TOKYO)
    if local.date() < datetime(2019, 5, 1, tzinfo=TOKYO).date():
        return f"{local.year}年{local.month}月{local.day}日"
    year = local.year - 2018
    return f"令和{'元' if year == 1 else year}年{local.month}月{local.day}日"


@dataclass(frozen=True)
class ReceiptView:
    """What a printed receipt shows."""

    receipt_number: str
    facility_name: str
    item: str
    amount_yen: int
    method: str
    brand: str | None
    card_last4: str | None
    occurred_at: datetime
    refunded_yen: int
    voided: bool

    @property
    def method_label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)

    @property
    def date_wareki(self) -> str:
        return wareki(self.occurred_at)

    @property
    def occurred_at_local(self) -> str:
        return self.occurred_at.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M")

    @property
    def occurred_at_iso(self) -> str:
        return self.occurred_at.astimezone(TOKYO).isoformat()


def render_receipt(receipt: ReceiptView, *, copy: bool) -> str:
    return _ENV.get_template("receipt.html").render(r=receipt, copy=copy)
