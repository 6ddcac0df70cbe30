"""The certificates table: an issued certificate (証明書) with its PDF and the hash of its
verification code, looked up by number for the public check and by application for download."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.applications.store import Conn


@dataclass(frozen=True)
class StoredCertificate:
    number: str
    application_id: uuid.UUID
    procedure_code: str
    procedure_name: str
    issued_at: datetime
    verification_code_hash: str


async def insert_certificate(conn: asyncpg.Connection, cert: StoredCertificate, pdf: bytes) -> None:
    await conn.execute(
        """INSERT INTO certificates (number, application_id, procedure_code, procedure_name,
                                     issued_at, verification_code_hash, pdf)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        cert.number,
        cert.application_id,
        cert.procedure_code,
        cert.procedure_name,
        cert.issued_at,
        cert.verification_code_hash,
        pdf,
    )


async def get_certificate(conn: Conn, number: str) -> StoredCertificate | None:
    row = await conn.fetchrow(
        """SELECT number, application_id, procedure_code, procedure_name, issued_at,
                  verification_code_hash FROM certificates WHERE number = $1""",
        number,
    )
    return None if row is None else StoredCertificate(**dict(row))


async def get_certificate_pdf(conn: Conn, application_id: uuid.UUID) -> bytes | None:
    pdf: bytes | None = await conn.fetchval(
        "SELECT pdf FROM certificates WHERE application_id = $1", application_id
    )
    return pdf
