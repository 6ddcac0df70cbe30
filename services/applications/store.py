"""asyncpg queries on the applications schema only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeAlias

import asyncpg

from contracts.applications import Channel, ProcedureGroup
from contracts.envelope import Envelope, Event
from services.applications.domain import Application, ApplicationStatus, Procedure
from services.applications.identity import Challenge, VerifiedIdentity
from services.runtime.outbox import OUTBOX_COLUMNS, OUTBOX_UNNEST_TYPES, outbox_values

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_APP_COLUMNS = """id, procedure_code, channel, status, submitted_at, applicant_id, form, fee_yen,
    payment_id, paid_at, decided_at, rejection_reason, certificate_number, identity_name,
    identity_address, identity_birth_date, identity_cert_serial, identity_cert_issuer,
    identity_checked_at, identity_result"""


def _application(row: asyncpg.Record) -> Application:
    return Application(
        id=row["id"],
        procedure_code=row["procedure_code"],
        channel=Channel(row["channel"]),
        status=ApplicationStatus(row["status"]),
        submitted_at=row["submitted_at"],
        applicant_id=row["applicant_id"],
        form=json.loads(row["form"]),
        fee_yen=row["fee_yen"],
        payment_id=row["payment_id"],
        paid_at=row["paid_at"],
        decided_at=row["decided_at"],
        rejection_reason=row["rejection_reason"],
        certificate_number=row["certificate_number"],
        identity=(
            VerifiedIdentity(
                name=row["identity_name"],
                address=row["identity_address"],
                birth_date=row["identity_birth_date"],
                certificate_serial=row["identity_cert_serial"],
                issuer=row["identity_cert_issuer"],
                checked_at=row["identity_checked_at"],
                result=row["identity_result"],
            )
            if row["identity_checked_at"] is not None
            else None
        ),
    )


class SubmissionWrite(Enum):
    """What ``insert_submission`` did."""

    INSERTED = "inserted"
    PROCEDURE_CHANGED = "procedure_changed"
    """The procedure's row is no longer the version decided on: nothing was written."""
    KEY_TAKEN = "key_taken"
    """The Idempotency-Key was already claimed (the other transaction has ended): nothing was
    written; read what it holds with ``stored_response``."""


@dataclass(frozen=True)
class KeyClaim:
    """An Idempotency-Key to claim together with the response it will replay."""

    key: str
    request_hash: str
    status_code: int
    body: Any


_INSERT_APPLICATION = """INSERT INTO applications (id, procedure_code, channel, status,
        submitted_at, applicant_id, form, fee_yen, identity_name, identity_address,
        identity_birth_date, identity_cert_serial, identity_cert_issuer, identity_checked_at,
        identity_result)
    SELECT $1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15"""


def _application_values(app: Application) -> tuple[Any, ...]:
    """``_INSERT_APPLICATION``'s $1-$15 for ``app``."""
    ident = app.identity
    return (
        app.id,
        app.procedure_code,
        app.channel.value,
        app.status.value,
        app.submitted_at,
        app.applicant_id,
        json.dumps(app.form, ensure_ascii=False),
        app.fee_yen,
        *(
            (
                ident.name,
                ident.address,
                ident.birth_date,
                ident.certificate_serial,
                ident.issuer,
                ident.checked_at,
                ident.result,
            )
            if ident
            else (None,) * 7
        ),
    )


async def insert_submission(
    conn: asyncpg.Connection, app: Application, procedure_version: str, claim: KeyClaim | None
) -> SubmissionWrite:
    """A new application in one statement (one round trip): only if its procedure's row still
    has ``procedure_version`` (``xmin``, see ``get_procedure_with_version``) and, with
    ``claim``, only if its Idempotency-Key is claimed by this very statement, response and all.

    A key held by a transaction still open makes the statement wait for it to end, as
    ``claim_idempotency_key`` does.
    """
    unchanged = "unchanged AS (SELECT FROM procedures WHERE code = $2 AND xmin::text = $16::text)"
    args: list[Any] = [*_application_values(app), procedure_version]
    if claim is None:
        sql = f"""WITH {unchanged},
                  app AS ({_INSERT_APPLICATION} FROM unchanged RETURNING id)"""
    else:
        sql = f"""WITH {unchanged},
                  claim AS (INSERT INTO idempotency_keys (key, request_hash, status_code, response)
                            SELECT $17, $18, $19, $20::jsonb FROM unchanged
                            ON CONFLICT (key) DO NOTHING RETURNING key),
                  app AS ({_INSERT_APPLICATION} FROM claim RETURNING id)"""
        args += [
            claim.key,
            claim.request_hash,
            claim.status_code,
            json.dumps(claim.body, ensure_ascii=False),
        ]
    outcome = "SELECT EXISTS (SELECT FROM unchanged) AS unchanged, EXISTS (SELECT FROM app) AS done"
    row = await conn.fetchrow(f"{sql} {outcome}", *args)
    assert row is not None
    if row["done"]:
        return SubmissionWrite.INSERTED
    return SubmissionWrite.KEY_TAKEN if row["unchanged"] else SubmissionWrite.PROCEDURE_CHANGED


@dataclass(frozen=True)
class NewSubmission:
    """One decided submission for ``insert_submissions``: the application, the procedure
    version it was decided on, its Idempotency-Key claim (if any) and its outbox rows."""

    application: Application
    procedure_version: str
    claim: KeyClaim | None
    events: Sequence[Envelope[Event]]
    trace_headers: str
    """JSON of the W3C trace context of the request that made it (its events' parent)."""


_OUTBOX_ARRAYS = ", ".join(f"${n}::{t}[]" for n, t in enumerate(OUTBOX_UNNEST_TYPES, 22))

# Each event's outbox row (runtime.outbox.outbox_values) after its application's id ($21).
_INSERT_SUBMISSIONS = f"""
WITH s AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::uuid[], $7::text[], $8::integer[], $9::text[], $10::text[],
                         $11::date[], $12::text[], $13::text[], $14::timestamptz[], $15::text[],
                         $16::text[], $17::text[], $18::text[], $19::integer[], $20::text[])
        AS s(id, procedure_code, channel, status, submitted_at, applicant_id, form, fee_yen,
             identity_name, identity_address, identity_birth_date, identity_cert_serial,
             identity_cert_issuer, identity_checked_at, identity_result, procedure_version,
             key, request_hash, status_code, response)
),
unchanged AS (
    SELECT s.* FROM s JOIN procedures p
        ON p.code = s.procedure_code AND p.xmin::text = s.procedure_version
),
claim AS (
    INSERT INTO idempotency_keys (key, request_hash, status_code, response)
    SELECT key, request_hash, status_code, response::jsonb FROM unchanged
    WHERE key IS NOT NULL
    ORDER BY key
    ON CONFLICT (key) DO NOTHING
    RETURNING key
),
app AS (
    INSERT INTO applications (id, procedure_code, channel, status, submitted_at, applicant_id,
        form, fee_yen, identity_name, identity_address, identity_birth_date,
        identity_cert_serial, identity_cert_issuer, identity_checked_at, identity_result)
    SELECT id, procedure_code, channel, status, submitted_at, applicant_id, form::jsonb,
        fee_yen, identity_name, identity_address, identity_birth_date, identity_cert_serial,
        identity_cert_issuer, identity_checked_at, identity_result
    FROM unchanged
    WHERE key IS NULL OR key IN (SELECT key FROM claim)
    RETURNING id
),
events AS (
    INSERT INTO outbox ({OUTBOX_COLUMNS})
    SELECT e.event_id, e.subject, e.ce_type, e.ce_source, e.ce_subject, e.ce_time,
           e.trace_headers::jsonb, e.payload
    FROM unnest($21::uuid[], {_OUTBOX_ARRAYS}) WITH ORDINALITY
        AS e(application_id, event_id, subject, ce_type, ce_source, ce_subject, ce_time,
             trace_headers, payload, n)
    WHERE e.application_id IN (SELECT id FROM app)
    ORDER BY e.n
    RETURNING 1
)
SELECT id FROM app"""


async def insert_submissions(conn: Conn, submissions: Sequence[NewSubmission]) -> set[uuid.UUID]:
    """Many submissions in one statement (one round trip, one transaction: PostgreSQL runs a
    lone statement in a transaction of its own): for each, as ``insert_submission`` does for
    one, the application only if its procedure's row still has the version decided on and its
    Idempotency-Key (if any) is claimed by this statement, with the response it will replay;
    and the outbox rows of the applications inserted, each with its own request's trace
    context, in the order given. Returns the ids of the applications inserted; the others
    wrote nothing (their key was taken or their procedure changed).

    Keys must be distinct within a call. A key held by a transaction still open makes the
    statement wait for it to end; keys are claimed in sorted order, so two such statements
    cannot deadlock over the same keys.
    """
    columns: list[list[Any]] = [[] for _ in range(29)]
    for sub in submissions:
        app, claim = sub.application, sub.claim
        row: tuple[Any, ...] = (
            *_application_values(app),
            sub.procedure_version,
            *(
                (
                    claim.key,
                    claim.request_hash,
                    claim.status_code,
                    json.dumps(claim.body, ensure_ascii=False),
                )
                if claim
                else (None,) * 4
            ),
        )
        for column, value in zip(columns[:20], row, strict=True):
            column.append(value)
        for e in sub.events:
            for column, value in zip(
                columns[20:], (app.id, *outbox_values(e, sub.trace_headers)), strict=True
            ):
                column.append(value)
    rows = await conn.fetch(_INSERT_SUBMISSIONS, *columns)
    return {r["id"] for r in rows}


async def update_application(conn: asyncpg.Connection, app: Application) -> None:
    await conn.execute(
        """UPDATE applications SET status = $2, payment_id = $3, paid_at = $4, decided_at = $5,
                  rejection_reason = $6, certificate_number = $7, updated_at = now()
           WHERE id = $1""",
        app.id,
        app.status.value,
        app.payment_id,
        app.paid_at,
        app.decided_at,
        app.rejection_reason,
        app.certificate_number,
    )


async def get_application(
    conn: Conn, app_id: uuid.UUID, *, for_update: bool = False
) -> Application | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_APP_COLUMNS} FROM applications WHERE id = $1{lock}",
        app_id,
    )
    return None if row is None else _application(row)


@dataclass(frozen=True)
class ApplicationFilter:
    """What staff filter the application list by."""

    status: ApplicationStatus | None = None
    procedure_code: str | None = None
    department: str | None = None
    submitted_from: datetime | None = None
    submitted_to: datetime | None = None
    applicant_id: uuid.UUID | None = None


async def list_applications(
    conn: Conn, f: ApplicationFilter, *, limit: int, offset: int
) -> tuple[list[Application], int]:
    """One page of applications, newest first, and how many match in all."""
    where = ["true"]
    args: list[Any] = []

    def cond(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if f.status is not None:
        cond("a.status = ?", f.status.value)
    if f.procedure_code is not None:
        cond("a.procedure_code = ?", f.procedure_code)
    if f.department is not None:
        cond("p.department = ?", f.department)
    if f.submitted_from is not None:
        cond("a.submitted_at >= ?", f.submitted_from)
    if f.submitted_to is not None:
        cond("a.submitted_at < ?", f.submitted_to)
    if f.applicant_id is not None:
        cond("a.applicant_id = ?", f.applicant_id)
    clause = " AND ".join(where)
    columns = ", ".join(f"a.{c.strip()}" for c in _APP_COLUMNS.split(","))
    rows = await conn.fetch(
        f"""SELECT {columns}, count(*) OVER () AS total
            FROM applications a LEFT JOIN procedures p ON p.code = a.procedure_code
            WHERE {clause}
            ORDER BY a.submitted_at DESC, a.id
            LIMIT {int(limit)} OFFSET {int(offset)}""",
        *args,
    )
    total = int(rows[0]["total"]) if rows else 0
    return [_application(r) for r in rows], total


# -- procedures (手続き) ----------------------------------------------------------------------

_PROC_COLUMNS = """code, name_ja, department, proc_group, fee_yen, yields_certificate, form_schema,
    online_since, planned_online_quarter, sample"""


def _procedure(row: asyncpg.Record) -> Procedure:
    return Procedure(
        code=row["code"],
        name_ja=row["name_ja"],
        department=row["department"],
        group=ProcedureGroup(row["proc_group"]),
        fee_yen=row["fee_yen"],
        yields_certificate=row["yields_certificate"],
        form_schema=json.loads(row["form_schema"]),
        online_since=row["online_since"],
        planned_online_quarter=row["planned_online_quarter"],
        sample=row["sample"],
    )


async def get_procedure(conn: Conn, code: str) -> Procedure | None:
    row = await conn.fetchrow(
        f"SELECT {_PROC_COLUMNS} FROM procedures WHERE code = $1",
        code,
    )
    return None if row is None else _procedure(row)


async def get_procedure_with_version(
    conn: asyncpg.Connection, code: str
) -> tuple[Procedure, str] | None:
    """The procedure and its row's version, share-locked until the transaction ends (so the
    version holds for an application inserted in it).

    The version is PostgreSQL's ``xmin``: every UPDATE of the row gives it a new one, whoever
    writes it (the import command runs in its own process)."""
    row = await conn.fetchrow(
        f"""SELECT {_PROC_COLUMNS}, xmin::text AS version FROM procedures WHERE code = $1
            FOR SHARE""",
        code,
    )
    return None if row is None else (_procedure(row), row["version"])


async def get_procedures(conn: Conn, codes: list[str]) -> dict[str, Procedure]:
    rows = await conn.fetch(
        f"SELECT {_PROC_COLUMNS} FROM procedures WHERE code = ANY($1::text[])",
        codes,
    )
    return {r["code"]: _procedure(r) for r in rows}


def search_text(p: Procedure) -> str:
    return f"{p.code} {p.name_ja} {p.department}".lower()


async def upsert_procedures(conn: asyncpg.Connection, procedures: list[Procedure]) -> None:
    await conn.executemany(
        """INSERT INTO procedures (code, name_ja, department, proc_group, fee_yen,
                                   yields_certificate, form_schema, online_since,
                                   planned_online_quarter, sample, search_text, announced_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, now())
           ON CONFLICT (code) DO UPDATE SET
               name_ja = EXCLUDED.name_ja, department = EXCLUDED.department,
               proc_group = EXCLUDED.proc_group, fee_yen = EXCLUDED.fee_yen,
               yields_certificate = EXCLUDED.yields_certificate,
               form_schema = EXCLUDED.form_schema, online_since = EXCLUDED.online_since,
               planned_online_quarter = EXCLUDED.planned_online_quarter,
               sample = EXCLUDED.sample, search_text = EXCLUDED.search_text,
               announced_at = now(), updated_at = now()""",
        [
            (
                p.code,
                p.name_ja,
                p.department,
                int(p.group),
                p.fee_yen,
                p.yields_certificate,
                json.dumps(p.form_schema, ensure_ascii=False, sort_keys=True),
                p.online_since,
                p.planned_online_quarter,
                p.sample,
                search_text(p),
            )
            for p in procedures
        ],
    )


async def take_unannounced_procedures(conn: asyncpg.Connection) -> list[Procedure]:
    """Procedures never announced (the migration's core), marked announced now: the caller
    writes their events in the same transaction."""
    rows = await conn.fetch(
        f"""UPDATE procedures SET announced_at = now() WHERE announced_at IS NULL
            RETURNING {_PROC_COLUMNS}"""
    )
    return sorted((_procedure(r) for r in rows), key=lambda p: p.code)


@dataclass(frozen=True)
class ProcedureQuery:
    """Catalog search: free text over code, name and department, plus exact filters."""

    text: str | None = None
    department: str | None = None
    group: ProcedureGroup | None = None
    online: bool | None = None
    sample: bool | None = None


async def search_procedures(
    conn: Conn, q: ProcedureQuery, *, limit: int, offset: int
) -> tuple[list[Procedure], int]:
    where = ["true"]
    args: list[Any] = []

    def cond(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if q.text:
        for word in q.text.lower().split():
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond("search_text LIKE ?", f"%{escaped}%")
    if q.department is not None:
        cond("department = ?", q.department)
    if q.group is not None:
        cond("proc_group = ?", int(q.group))
    if q.online is not None:
        where.append("online_since IS NOT NULL" if q.online else "online_since IS NULL")
    if q.sample is not None:
        cond("sample = ?", q.sample)
    rows = await conn.fetch(
        f"""SELECT {_PROC_COLUMNS}, count(*) OVER () AS total FROM procedures
            WHERE {" AND ".join(where)}
            ORDER BY code LIMIT {int(limit)} OFFSET {int(offset)}""",
        *args,
    )
    total = int(rows[0]["total"]) if rows else 0
    return [_procedure(r) for r in rows], total


# -- idempotency keys -------------------------------------------------------------------------


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


# -- identity challenges (チャレンジ) -------------------------------------------------------------


async def insert_challenge(conn: Conn, challenge: Challenge) -> None:
    await conn.execute(
        """INSERT INTO identity_challenges (challenge, applicant_id, issued_at, expires_at)
           VALUES ($1, $2, $3, $4)""",
        challenge.value,
        challenge.applicant_id,
        challenge.issued_at,
        challenge.expires_at,
    )


async def take_challenge(conn: asyncpg.Connection, value: str) -> Challenge | None:
    """The challenge ``value``, row-locked until the transaction ends: a second submission
    carrying it waits here, then finds it used (or free again, if the first rolled back)."""
    row = await conn.fetchrow(
        """SELECT challenge, applicant_id, issued_at, expires_at, used_at
           FROM identity_challenges WHERE challenge = $1 FOR UPDATE""",
        value,
    )
    if row is None:
        return None
    return Challenge(
        value=row["challenge"],
        applicant_id=row["applicant_id"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
    )


async def use_challenge(
    conn: asyncpg.Connection, value: str, application_id: uuid.UUID, now: datetime
) -> None:
    """Mark the challenge taken by ``take_challenge`` used by ``application_id``."""
    result: str = await conn.execute(
        """UPDATE identity_challenges SET used_at = $3, application_id = $2
           WHERE challenge = $1 AND used_at IS NULL""",
        value,
        application_id,
        now,
    )
    if result != "UPDATE 1":  # the caller holds the row lock and saw it unused
        raise RuntimeError(f"challenge not marked used ({result})")


async def forget_expired_challenges(conn: Conn, expired_before: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM identity_challenges WHERE expires_at < $1", expired_before
    )
    return int(result.split()[-1])


# -- certificates (証明書) --------------------------------------------------------------------


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
