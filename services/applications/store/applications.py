"""The applications table: an application's row, read, listed and updated, and the
statements that insert new submissions (one, or a batch with its Idempotency-Key claims and
outbox rows), each only if its procedure is still the version it was decided on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import asyncpg

from contracts.applications import Channel
from contracts.envelope import Envelope, Event
from services.applications.domain import Application, ApplicationStatus
from services.applications.identity import VerifiedIdentity
from services.applications.store import Conn
from services.runtime.outbox import OUTBOX_COLUMNS, OUTBOX_UNNEST_TYPES, outbox_values

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
