"""The idempotency_keys table: a client's Idempotency-Key claimed in a command's transaction,
the response it replays, and the sweep of old keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.applications.store import Conn


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int
    body: Any


async def claim_idempotency_key(
    conn: asyncpg.Connection, key: str, request_hash: str
) -> StoredResponse | None:
    """Claim ``key`` in the open transaction, or return what it already holds.

    A concurrent request with the same key waits on the first one's row lock until that
    transaction ends, then sees its stored response (or claims the key if it rolled back).
    """
    claimed = await conn.fetchval(
        """INSERT INTO idempotency_keys (key, request_hash) VALUES ($1, $2)
           ON CONFLICT (key) DO NOTHING RETURNING key""",
        key,
        request_hash,
    )
    if claimed is not None:
        return None
    stored = await stored_response(conn, key)
    assert stored is not None
    return stored


async def stored_response(conn: asyncpg.Connection, key: str) -> StoredResponse | None:
    row = await conn.fetchrow(
        "SELECT request_hash, status_code, response FROM idempotency_keys WHERE key = $1", key
    )
    if row is None:
        return None
    return StoredResponse(row["request_hash"], row["status_code"], json.loads(row["response"]))


async def store_idempotent_response(
    conn: asyncpg.Connection, key: str, status_code: int, body: Any
) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET status_code = $2, response = $3::jsonb WHERE key = $1",
        key,
        status_code,
        json.dumps(body, ensure_ascii=False),
    )


async def forget_idempotency_keys(conn: Conn, older_than: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < $1", older_than
    )
    return int(result.split()[-1])
