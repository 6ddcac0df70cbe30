"""Helpers for the payments integration tests: a terminal that publishes, ledger checks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from contracts.envelope import CE_ID, CE_SOURCE, CE_SPECVERSION, CE_TIME, CE_TYPE, NATS_MSG_ID
from contracts.payments import (
    TerminalSettlementV1,
    TerminalTransactionV1,
    terminal_settlement_subject,
    terminal_subject,
)
from contracts.subjects import absolute
from services.payments.store import postings

JST = timezone(timedelta(hours=9))


def transaction(
    terminal_id: str,
    transaction_id: str,
    *,
    facility_code: str = "shiminka",
    kind: str = "capture",
    method: str = "qr",
    brand: str | None = "PayPay",
    amount_yen: int = 300,
    item: str = "住民票の写し",
    occurred_at: str = "2026-11-24T10:15:00+09:00",
    **extra: Any,
) -> dict[str, Any]:
    """A terminal transaction payload as a terminal would send it (a plain dict)."""
    body: dict[str, Any] = {
        "transaction_id": transaction_id,
        "terminal_id": terminal_id,
        "facility_code": facility_code,
        "kind": kind,
        "method": method,
        "brand": brand,
        "amount_yen": amount_yen,
        "item": item,
        "occurred_at": occurred_at,
    }
    body.update(extra)
    return body


def terminal_headers(
    payload: dict[str, Any], *, ce_id: str | None = None, msg_id: str | None = None
) -> dict[str, str]:
    """The CloudEvents headers a terminal sends with a transaction (binary content mode)."""
    message_id = ce_id or f"{payload['terminal_id']}/{payload['transaction_id']}"
    return {
        CE_SPECVERSION: "1.0",
        CE_ID: message_id,
        CE_SOURCE: f"/terminals/{payload['terminal_id']}",
        CE_TYPE: TerminalTransactionV1.event_type,
        CE_TIME: datetime.now(JST).isoformat(),
        "content-type": "application/json",
        NATS_MSG_ID: msg_id or message_id,
    }


async def terminal_publishes(
    js: JetStreamContext,
    namespace: str,
    payload: dict[str, Any],
    *,
    subject: str | None = None,
    ce_id: str | None = None,
    msg_id: str | None = None,
    body: bytes | None = None,
) -> int:
    """Publish as a terminal does: a CloudEvent in binary mode on its own subject."""
    headers = terminal_headers(payload, ce_id=ce_id, msg_id=msg_id)
    relative = subject or terminal_subject(payload["facility_code"], payload["terminal_id"])
    data = body if body is not None else json.dumps(payload, ensure_ascii=False).encode()
    ack = await js.publish(absolute(namespace, relative), data, headers=headers)
    return int(ack.seq)


async def terminal_settles(
    js: JetStreamContext,
    namespace: str,
    terminal_id: str,
    batch: dict[str, Any],
    *,
    subject: str | None = None,
) -> int:
    """Publish a terminal's settlement batch as the terminal does (a CloudEvent)."""
    message_id = f"{terminal_id}/{batch['batch_id']}"
    headers = {
        CE_SPECVERSION: "1.0",
        CE_ID: message_id,
        CE_SOURCE: f"/terminals/{terminal_id}",
        CE_TYPE: TerminalSettlementV1.event_type,
        CE_TIME: datetime.now(JST).isoformat(),
        NATS_MSG_ID: message_id,
    }
    relative = subject or terminal_settlement_subject(batch["facility_code"], terminal_id)
    body = json.dumps({"terminal_id": terminal_id, "batch": batch}, ensure_ascii=False).encode()
    ack = await js.publish(absolute(namespace, relative), body, headers=headers)
    return int(ack.seq)


async def assert_ledger_balances(pool: asyncpg.Pool) -> None:
    """Every posting balances, and so does the whole ledger."""
    assert await postings.unbalanced_postings(pool) == []
    debits, credits = await pool.fetchrow(
        "SELECT coalesce(sum(debit_yen), 0), coalesce(sum(credit_yen), 0) FROM ledger_entries"
    )
    assert debits == credits


async def revenue_yen(pool: asyncpg.Pool, facility_code: str = "shiminka") -> int:
    """Net revenue of a facility in the ledger (credits minus debits on revenue)."""
    value = await pool.fetchval(
        """SELECT coalesce(sum(e.credit_yen - e.debit_yen), 0) FROM ledger_entries e
           JOIN postings p USING (posting_id)
           WHERE e.account = 'revenue' AND p.facility_code = $1""",
        facility_code,
    )
    return int(value)
