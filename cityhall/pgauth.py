"""`cityhall up`'s embedded PostgreSQL: one database, one login role per service, each with
its own password in a file of its own (0600); password sign-in for everyone, over the unix
socket too (docs/security.md)."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import asyncpg

from cityhall.embedded import EmbeddedPostgres
from cityhall.files import write_private
from services.registry import SERVICE_NAMES

DATABASE = "cityhall"


PG_HBA = """# Written by `cityhall up`: every role signs in with its own password (SCRAM), over the
# unix socket too; nothing is trusted, so a service's role is a boundary (docs/security.md).
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


def pg_passfile(home: Path, role: str) -> Path:
    """A role's password, in PostgreSQL's password-file format, in a file of its own (0600)."""
    return home / "postgres-auth" / f"{role}.pgpass"


def pg_password(home: Path, role: str) -> str:
    path = pg_passfile(home, role)
    if path.is_file():
        return path.read_text().strip().rsplit(":", 1)[1]
    password = secrets.token_urlsafe(24)
    write_private(path, f"*:*:*:{role}:{password}\n")
    path.parent.chmod(0o700)
    return password


def with_passfile(url: str, passfile: Path) -> str:
    """``url`` (already with ``?host=``) naming its role's password file (libpq and asyncpg
    read the ``passfile`` parameter): the URL itself holds no secret."""
    return f"{url}&passfile={quote(str(passfile), safe='/')}"


async def bootstrap_database(pg: EmbeddedPostgres, home: Path) -> dict[str, str]:
    """Embedded PostgreSQL: one database, one login role per service, each with its own
    password; then password authentication for everyone (initdb left it trusting every local
    connection). Returns each service's URL.

    Each service's role creates and owns its schema; no role is granted another's schema, so a
    service cannot read another service's tables.
    """
    passwords = {role: pg_password(home, role) for role in ("postgres", *SERVICE_NAMES)}
    admin = with_passfile(pg.url(), pg_passfile(home, "postgres"))
    conn = await asyncpg.connect(admin)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f"CREATE DATABASE {DATABASE}")
        for service in SERVICE_NAMES:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", service):
                await conn.execute(f"CREATE ROLE {service} LOGIN")
            await conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {DATABASE} TO {service}")
        for role, password in passwords.items():
            literal = await conn.fetchval("SELECT quote_literal($1)", password)
            await conn.execute(f"ALTER ROLE {role} PASSWORD {literal}")
        hba = pg.pgdata / "pg_hba.conf"
        if hba.read_text() != PG_HBA:
            hba.write_text(PG_HBA)
            await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    db = await asyncpg.connect(with_passfile(pg.url(DATABASE), pg_passfile(home, "postgres")))
    try:
        await db.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    finally:
        await db.close()
    return {s: with_passfile(pg.url(DATABASE, user=s), pg_passfile(home, s)) for s in SERVICE_NAMES}
