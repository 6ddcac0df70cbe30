"""Receipts (領収書): numbered per facility and fiscal year, printable, reprints are copies."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js import JetStreamContext

from services.payments.handlers.registry import register_terminal
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import terminal_publishes, transaction

STAFF = {"authorization": "Bearer tok-counter-0000001"}


@pytest.fixture(autouse=True)
def staff_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_STAFF_TOKENS", "madoguchi02=tok-counter-0000001")


async def receipts(payments: Any) -> list[str]:
    rows = await payments.pool.fetch("SELECT receipt_number FROM receipts ORDER BY 1")
    return [r["receipt_number"] for r in rows]


async def test_receipt_numbers_restart_per_facility_and_fiscal_year(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    civic = (await register_terminal(payments.pool, "shiminka")).terminal_id
    museum = (await register_terminal(payments.pool, "bijutsukan")).terminal_id
    for tx_id, when in [
        ("A1", "2026-03-31T23:59:00+09:00"),  # fiscal 2025
        ("A2", "2026-04-01T00:01:00+09:00"),  # fiscal 2026
        ("A3", "2026-11-24T10:00:00+09:00"),
    ]:
        await terminal_publishes(js, namespace, transaction(civic, tx_id, occurred_at=when))
    await terminal_publishes(
        js, namespace, transaction(museum, "M1", facility_code="bijutsukan", item="観覧料")
    )

    async def four() -> list[str]:
        found = await receipts(payments)
        return found if len(found) == 4 else []

    assert await wait_for(four) == [
        "bijutsukan-2026-000001",
        "shiminka-2025-000001",
        "shiminka-2026-000001",
        "shiminka-2026-000002",
    ]


async def test_a_receipt_prints_with_facility_item_amount_method_and_date_then_as_copies(
    payments: Any, js: JetStreamContext, namespace: str
) -> None:
    terminal = (await register_terminal(payments.pool, "shiminka")).terminal_id
    await terminal_publishes(
        js,
        namespace,
        transaction(
            terminal,
            "C1",
            method="credit",
            brand="JCB",
            amount_yen=1450,
            item="戸籍謄本 <2通>",
            occurred_at="2026-11-24T01:30:00+00:00",
            card={"token": "tok_abcdefgh", "brand": "JCB", "last4": "0007"},
        ),
    )
    [number] = await wait_for(lambda: receipts(payments))

    assert (await payments.http.get(f"/receipts/{number}")).status_code == 401
    first = await payments.http.get(f"/receipts/{number}", headers=STAFF)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/html")
    html = first.text
    for shown in (
        "領収書",
        number,
        "市民課",
        "戸籍謄本 &lt;2通&gt;",  # escaped
        "¥1,450",
        "クレジットカード",
        "JCB",
        "****0007",
        "令和8年11月24日",
        "2026-11-24 10:30",  # shown in Asia/Tokyo
    ):
        assert shown in html
    assert "再発行" not in html

    again = await payments.http.get(f"/receipts/{number}", headers=STAFF)
    assert 'id="copy-mark"' in again.text
    assert "再発行（写）" in again.text


async def test_an_unknown_receipt_is_404(payments: Any) -> None:
    response = await payments.http.get("/receipts/shiminka-2026-999999", headers=STAFF)
    assert response.status_code == 404
    assert response.json()["detail"]["error"] == "UnknownReceipt"
