"""The applications service's SQL: asyncpg queries on its own schema only, one module per
table (applications, procedures, idempotency_keys, identity_challenges, certificates), each
with the rows it reads and writes."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
