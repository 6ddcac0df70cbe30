"""One function per command or event: load, decide (domain), save state and events in one
transaction. HTTP commands run inside ``in_transaction``, which also keeps the Idempotency-Key
and the response it produced in that same transaction."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from contracts.applications import ProcedureRegisteredV1, ProcedureUpdatedV1, SubmitApplication
from contracts.envelope import Envelope, Event
from contracts.payments import PaymentAttachedV1, PaymentCapturedV1
from services.applications import catalog, certificates, domain, identity, signatures
from services.applications.domain import (
    Application,
    ApplicationError,
    ApplicationStatus,
    Decision,
    Procedure,
)
from services.applications.forms import FormInvalid
from services.applications.identity import (
    Challenge,
    IdentityRefused,
    VerifiedIdentity,
)
from services.applications.procedures import CachedProcedure, ProcedureCache
from services.applications.signatures import TrustConfig
from services.applications.store.applications import (
    KeyClaim,
    NewSubmission,
    SubmissionWrite,
    get_application,
    insert_submission,
    update_application,
)
from services.applications.store.certificates import StoredCertificate, insert_certificate
from services.applications.store.idempotency_keys import (
    StoredResponse,
    claim_idempotency_key,
    store_idempotent_response,
    stored_response,
)
from services.applications.store.identity_challenges import (
    insert_challenge,
    take_challenge,
    use_challenge,
)
from services.applications.store.procedures import (
    get_procedure,
    get_procedures,
    take_unannounced_procedures,
    upsert_procedures,
)
from services.applications.submissions import SubmissionWriter
from services.runtime.outbox import add_events
from services.runtime.service import ServiceContext
from services.runtime.telemetry import current_trace_headers

log = logging.getLogger(__name__)

T = TypeVar("T")
TOKYO = ZoneInfo("Asia/Tokyo")
KORIYAMA_CODE = "072036"
"""全国地方公共団体コード of Koriyama: the prefix of its certificate numbers."""


class UnknownProcedure(ApplicationError):
    """No procedure with that code in the catalog (HTTP 422 on procedure_code)."""


class ApplicationNotFound(ApplicationError):
    """No such application, or not one the caller may see (HTTP 404)."""


class IdempotencyKeyReused(ApplicationError):
    """The Idempotency-Key was already used with a different request (HTTP 422)."""


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key, scoped to the caller, and the hash of its request."""

    key: str
    request_hash: str

    @classmethod
    def of(cls, key: str, caller: str, method: str, path: str, body: Any) -> IdempotencyKey:
        canonical = json.dumps(
            {"method": method, "path": path, "body": body},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return cls(f"{caller}:{key}", hashlib.sha256(canonical.encode()).hexdigest())


async def in_transaction(
    ctx: ServiceContext,
    idempotency: IdempotencyKey | None,
    effect: Callable[[asyncpg.Connection], Awaitable[T]],
    render: Callable[[T], Any],
    status_code: int,
) -> tuple[int, Any]:
    """Run ``effect`` in one transaction and return (status, JSON body).

    With an Idempotency-Key, the first response is stored with the effect and replayed for the
    same key and request; the same key with another request raises ``IdempotencyKeyReused``.
    A refused request (an error) stores nothing, so the client may retry it.
    """
    async with ctx.pool.acquire() as conn, conn.transaction():
        if idempotency is not None:
            stored = await claim_idempotency_key(conn, idempotency.key, idempotency.request_hash)
            if stored is not None:
                return _replay(stored, idempotency)
        body = render(await effect(conn))
        if idempotency is not None:
            await store_idempotent_response(conn, idempotency.key, status_code, body)
    return status_code, body


def _replay(stored: StoredResponse, idempotency: IdempotencyKey) -> tuple[int, Any]:
    """The first response to this key, if this is the same request."""
    if stored.request_hash != idempotency.request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request"
        )
    return stored.status_code, stored.body


async def _save(
    ctx: ServiceContext, conn: asyncpg.Connection, app: Application, events: list[Event]
) -> Application:
    await update_application(conn, app)
    await add_events(conn, [Envelope.new(e) for e in events])
    return app


async def _load(conn: asyncpg.Connection, application_id: uuid.UUID) -> Application:
    app = await get_application(conn, application_id, for_update=True)
    if app is None:
        raise ApplicationNotFound(f"no application {application_id}")
    return app


def _log_refusal(exc: IdentityRefused, cmd: SubmitApplication) -> None:
    """A refused identity check is logged with the certificate's serial and issuer only."""
    log.warning(
        "identity check refused",
        extra={
            "reason": exc.reason.value,
            "certificate_serial": exc.serial,
            "issuer": exc.issuer,
            "procedure_code": cmd.procedure_code,
        },
    )


async def _take_challenge(
    conn: asyncpg.Connection, cmd: SubmitApplication, applicant_id: uuid.UUID | None
) -> Challenge:
    """The challenge a signed submission names, row-locked until its transaction ends, if
    this applicant may use it now (``identity.check_challenge``)."""
    assert cmd.identity is not None
    if applicant_id is None:
        raise identity.sign_in_required()
    found = await take_challenge(conn, cmd.identity.challenge)
    return identity.check_challenge(found, applicant_id, datetime.now(UTC))


def _verify_identity(
    cmd: SubmitApplication, challenge: Challenge, trust: TrustConfig, now: datetime
) -> VerifiedIdentity:
    """The signer of a signed submission: its signature must cover the applicant the
    challenge was issued to (the caller: ``check_challenge``), the challenge and the
    application as submitted."""
    assert cmd.identity is not None
    content = identity.canonical_content(
        applicant=str(challenge.applicant_id),
        challenge=challenge.value,
        procedure_code=cmd.procedure_code,
        channel=cmd.channel.value,
        form=cmd.form,
    )
    return signatures.verify(
        content, cmd.identity.signature, cmd.identity.certificate_chain, trust, now
    )


def _decide_submission(
    cmd: SubmitApplication,
    cached: CachedProcedure | None,
    applicant_id: uuid.UUID | None,
    trust: TrustConfig,
    challenge: Challenge | None = None,
) -> Decision:
    """The new application and its events, or the reason it is refused (no I/O). A signed
    submission comes with its challenge, already taken (``_take_challenge``)."""
    if cached is None:
        raise UnknownProcedure(f"no procedure {cmd.procedure_code!r} in the catalog")
    procedure = cached.procedure
    cached.form.check(cmd.form)
    now = datetime.now(UTC)
    verified = None
    if cmd.identity is not None:
        assert challenge is not None
        verified = _verify_identity(cmd, challenge, trust, now)
    elif domain.needs_signature(procedure, cmd.channel):
        raise domain.refuse_unsigned(procedure)
    app, submitted = domain.submit(
        procedure, cmd.channel, now, applicant_id=applicant_id, form=cmd.form, identity=verified
    )
    events: list[Event] = [submitted]
    if domain.fee_due_at_submission(app):
        # Online applicants pay online: the fee (手数料) is asked for at once.
        app, asked = domain.request_fee(app, procedure, now)
        events.extend(asked)
    return app, events


async def submit_application(
    ctx: ServiceContext,
    cmd: SubmitApplication,
    applicant_id: uuid.UUID | None,
    trust: TrustConfig,
    idempotency: IdempotencyKey | None,
    render: Callable[[Application], Any],
) -> tuple[int, Any]:
    """POST /applications: (status, JSON body), replayed for a retry with the same key.

    The busiest command, so it is written for few round trips. The procedure comes from the
    cache (services.applications.procedures), so the application is decided before the
    database is touched; an accepted one is then written by the group commit
    (``submissions.SubmissionWriter``) together with the submissions that arrive meanwhile:
    one statement inserts the applications, claims their Idempotency-Keys with the responses,
    checks their cached procedures are still current and writes their outbox rows.

    A refusal claims its key as ``in_transaction`` does and rolls back (``_refused``), so a
    retry of a request that was accepted gets its first response even if it would be refused
    now, and a refusal stores nothing. Whatever the group commit does not write takes the
    one-by-one path (``_submit_alone``): a procedure not cached yet or changed since (read
    again, share-locked, and decided again), a key already used (its first response replayed),
    a batch PostgreSQL refused as a whole, and every signed (group-2) submission: its challenge
    is taken and used in the transaction that inserts it, and its signature and certification
    path (a few milliseconds of RSA) cost far more than the round trips a batch saves.
    """
    procedures = ctx.provide(ProcedureCache, ProcedureCache)
    cached = procedures.peek(cmd.procedure_code) if cmd.identity is None else None
    if cached is not None:
        try:
            app, events = _decide_submission(cmd, cached, applicant_id, trust)
        except (ApplicationError, FormInvalid, IdentityRefused) as refusal:
            return await _refused(ctx, idempotency, refusal, cmd)
        else:
            body = render(app)
            claim = None
            if idempotency is not None:
                claim = KeyClaim(idempotency.key, idempotency.request_hash, 201, body)
            submission = NewSubmission(
                app, cached.version, claim, _envelopes(ctx, app, events), _trace_headers()
            )
            writer = ctx.provide(SubmissionWriter, lambda: SubmissionWriter(ctx.pool))
            if await writer.write(submission):
                return 201, body
    return await _submit_alone(ctx, cmd, applicant_id, trust, idempotency, render, procedures)


async def _refused(
    ctx: ServiceContext,
    idempotency: IdempotencyKey | None,
    refusal: Exception,
    cmd: SubmitApplication,
) -> tuple[int, Any]:
    """A refused submission: the first response of its key if it has one (a retry of a request
    that was accepted), else the refusal. The key is claimed and the claim rolled back, as
    ``in_transaction`` does, so a concurrent request with the same key is waited for."""
    if idempotency is not None:
        async with ctx.pool.acquire() as conn, conn.transaction():
            stored = await claim_idempotency_key(conn, idempotency.key, idempotency.request_hash)
            if stored is not None:
                return _replay(stored, idempotency)
            _log_if_identity(refusal, cmd)
            raise refusal  # rolls the claim back
    _log_if_identity(refusal, cmd)
    raise refusal


def _log_if_identity(refusal: Exception, cmd: SubmitApplication) -> None:
    if isinstance(refusal, IdentityRefused):
        _log_refusal(refusal, cmd)


def _envelopes(ctx: ServiceContext, app: Application, events: list[Event]) -> list[Envelope[Event]]:
    """The submission's events; ApplicationSubmitted's time is the application's."""
    first, *rest = events
    return [Envelope.new(first, time=app.submitted_at)] + [Envelope.new(e) for e in rest]


def _trace_headers() -> str:
    return json.dumps(current_trace_headers())


async def _submit_alone(
    ctx: ServiceContext,
    cmd: SubmitApplication,
    applicant_id: uuid.UUID | None,
    trust: TrustConfig,
    idempotency: IdempotencyKey | None,
    render: Callable[[Application], Any],
    procedures: ProcedureCache,
) -> tuple[int, Any]:
    """One submission in its own transaction: the procedure read when not cached or changed,
    a refusal after claiming the key, a replay of the key's first response.

    A signed submission takes its challenge first (row-locked: a concurrent request carrying
    the same one waits here) and marks it used before committing, so it is accepted once. A
    retry with the same Idempotency-Key finds the challenge used, and then the key's first
    response, which it gets instead of the refusal."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        challenge = None
        for attempt in range(3):
            try:
                if cmd.identity is not None and challenge is None:
                    challenge = await _take_challenge(conn, cmd, applicant_id)
                cached = await procedures.get(conn, cmd.procedure_code, fresh=attempt > 0)
                app, events = _decide_submission(cmd, cached, applicant_id, trust, challenge)
            except (ApplicationError, FormInvalid, IdentityRefused) as refusal:
                if idempotency is not None:
                    stored = await claim_idempotency_key(
                        conn, idempotency.key, idempotency.request_hash
                    )
                    if stored is not None:
                        return _replay(stored, idempotency)
                _log_if_identity(refusal, cmd)
                raise
            assert cached is not None
            body = render(app)
            claim = None
            if idempotency is not None:
                claim = KeyClaim(idempotency.key, idempotency.request_hash, 201, body)
            written = await insert_submission(conn, app, cached.version, claim)
            if written is SubmissionWrite.INSERTED:
                break
            if written is SubmissionWrite.KEY_TAKEN:
                assert idempotency is not None
                stored = await stored_response(conn, idempotency.key)
                if stored is not None:
                    return _replay(stored, idempotency)
                # Swept away since (older than the retention): claim it anew.
        else:
            raise RuntimeError(f"procedure {cmd.procedure_code!r} keeps changing; try again")
        if challenge is not None:
            await use_challenge(conn, challenge.value, app.id, app.submitted_at)
        await add_events(conn, _envelopes(ctx, app, events))
    return 201, body


def issue_challenge(
    applicant_id: uuid.UUID, lifetime: timedelta
) -> Callable[[asyncpg.Connection], Awaitable[Challenge]]:
    """POST /identity/challenges: a new single-use challenge for this applicant to sign."""

    async def effect(conn: asyncpg.Connection) -> Challenge:
        challenge = identity.new_challenge(applicant_id, datetime.now(UTC), lifetime)
        await insert_challenge(conn, challenge)
        return challenge

    return effect


Step = Callable[[asyncpg.Connection], Awaitable[Application]]


def withdraw(
    ctx: ServiceContext, application_id: uuid.UUID, check: Callable[[Application], None]
) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await _load(conn, application_id)
        check(app)
        return await _save(ctx, conn, *domain.withdraw(app, datetime.now(UTC)))

    return effect


def request_fee(
    ctx: ServiceContext, application_id: uuid.UUID, check: Callable[[Application], None]
) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await _load(conn, application_id)
        check(app)
        procedure = await get_procedure(conn, app.procedure_code)
        if procedure is None:
            raise UnknownProcedure(f"procedure {app.procedure_code!r} left the catalog")
        return await _save(ctx, conn, *domain.request_fee(app, procedure, datetime.now(UTC)))

    return effect


def start_review(ctx: ServiceContext, application_id: uuid.UUID) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await _load(conn, application_id)
        return await _save(ctx, conn, *domain.start_review(app, datetime.now(UTC)))

    return effect


def approve(ctx: ServiceContext, application_id: uuid.UUID) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await _load(conn, application_id)
        return await _save(ctx, conn, *domain.approve(app, datetime.now(UTC)))

    return effect


def reject(ctx: ServiceContext, application_id: uuid.UUID, reason: str) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await _load(conn, application_id)
        return await _save(ctx, conn, *domain.reject(app, reason, datetime.now(UTC)))

    return effect


def issue_certificate(ctx: ServiceContext, application_id: uuid.UUID) -> Step:
    async def effect(conn: asyncpg.Connection) -> Application:
        app = await _load(conn, application_id)
        procedure = await get_procedure(conn, app.procedure_code)
        if procedure is None:
            raise UnknownProcedure(f"procedure {app.procedure_code!r} left the catalog")
        now = datetime.now(UTC)
        if app.status is ApplicationStatus.APPROVED and procedure.yields_certificate:
            seq = await conn.fetchval("SELECT nextval('certificate_numbers')")
            number = f"{KORIYAMA_CODE}-{now.astimezone(TOKYO).year}-{seq:07d}"
        else:
            number = ""  # the domain refuses this step below
        issued, events = domain.issue_certificate(app, procedure, number, now)
        code = certificates.new_verification_code()
        pdf = certificates.render_pdf(_certificate_content(issued, procedure, number, code, now))
        await _save(ctx, conn, issued, events)
        await insert_certificate(
            conn,
            StoredCertificate(
                number=number,
                application_id=app.id,
                procedure_code=procedure.code,
                procedure_name=procedure.name_ja,
                issued_at=now,
                verification_code_hash=certificates.code_hash(code),
            ),
            pdf,
        )
        return issued

    return effect


def _certificate_content(
    app: Application, procedure: Procedure, number: str, code: str, now: datetime
) -> certificates.CertificateContent:
    titles = procedure.form_schema.get("properties", {})
    details = {"申請番号": str(app.id)}
    for key, value in app.form.items():
        title = titles.get(key, {}).get("title", key) if isinstance(titles, dict) else key
        details[str(title)] = value if isinstance(value, str) else json.dumps(value)
    return certificates.CertificateContent(
        number=number,
        verification_code=code,
        procedure_name=procedure.name_ja,
        issued_at=now,
        holder_name=app.identity.name if app.identity else None,
        holder_address=app.identity.address if app.identity else None,
        details=details,
    )


async def on_payment_captured(
    ctx: ServiceContext, conn: asyncpg.Connection, event: Envelope[PaymentCapturedV1]
) -> None:
    """PaymentCaptured for an application's fee: awaiting_payment -> paid (once).

    A capture for no application (a terminal's, or an online payment payments holds for
    staff: late, twice, another amount) changes nothing here.
    """
    captured = event.data
    if captured.application_id is None:
        return
    await _fee_paid(ctx, conn, captured.application_id, captured.payment_id, captured.amount_yen)


async def on_payment_attached(
    ctx: ServiceContext, conn: asyncpg.Connection, event: Envelope[PaymentAttachedV1]
) -> None:
    """Staff attached a payment that needed attention (paid after its request expired, or
    another amount, refunded down to the fee) to its application: it counts as the fee, as a
    PaymentCaptured would. The late-payment rule: payment expiry never closed the application
    (it stayed awaiting_payment), so it goes on to paid where it stood; one no longer awaiting
    payment (withdrawn) keeps its state, and staff refund the payment instead."""
    attached = event.data
    await _fee_paid(ctx, conn, attached.application_id, attached.payment_id, attached.amount_yen)


async def _fee_paid(
    ctx: ServiceContext,
    conn: asyncpg.Connection,
    application_id: uuid.UUID,
    payment_id: uuid.UUID,
    amount_yen: int,
) -> None:
    """awaiting_payment -> paid, once. An application not awaiting payment (already paid,
    withdrawn), or a payment short of the fee, changes nothing and is logged; the inbox has
    already dropped redeliveries."""
    app = await get_application(conn, application_id, for_update=True)
    if app is None or app.status is not ApplicationStatus.AWAITING_PAYMENT:
        log.warning(
            "payment for an application not awaiting payment; ignored",
            extra={
                "application_id": str(application_id),
                "payment_id": str(payment_id),
                "status": app.status.value if app else None,
            },
        )
        return
    if amount_yen < app.fee_yen:
        log.warning(
            "payment of less than the fee; application stays awaiting payment",
            extra={
                "application_id": str(app.id),
                "payment_id": str(payment_id),
                "amount_yen": amount_yen,
                "fee_yen": app.fee_yen,
            },
        )
        return
    paid, events = domain.record_payment(app, payment_id, amount_yen, datetime.now(UTC))
    await _save(ctx, conn, paid, events)


# -- catalog import ---------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: counts by outcome (rejected rows are counted by the reader)."""

    registered: int = 0
    updated: int = 0
    onlined: int = 0
    unchanged: int = 0
    announced: int = 0
    """Procedures already in the catalog but never announced (the core of migration 0002)."""


async def import_procedures(
    pool: asyncpg.Pool,
    procedures: list[Procedure],
    *,
    chunk_size: int = 500,
    progress: Callable[[int], None] = lambda _n: None,
) -> ImportReport:
    """Upsert procedures and announce each change, one transaction per chunk of rows."""
    report = ImportReport()
    for start in range(0, len(procedures), chunk_size):
        chunk = procedures[start : start + chunk_size]
        now = datetime.now(UTC)
        async with pool.acquire() as conn, conn.transaction():
            before = await get_procedures(conn, [p.code for p in chunk])
            changed: list[Procedure] = []
            events: list[Event] = []
            for p in chunk:
                found = catalog.changes(before.get(p.code), p, now)
                if not found:
                    report.unchanged += 1
                    continue
                changed.append(p)
                events.extend(found)
                for e in found:
                    if isinstance(e, ProcedureRegisteredV1):
                        report.registered += 1
                    elif isinstance(e, ProcedureUpdatedV1):
                        report.updated += 1
                    else:
                        report.onlined += 1
            await upsert_procedures(conn, changed)
            await add_events(conn, [Envelope.new(e, time=now) for e in events])
        progress(len(chunk))
    async with pool.acquire() as conn, conn.transaction():
        now = datetime.now(UTC)
        unannounced = await take_unannounced_procedures(conn)
        events = [e for p in unannounced for e in catalog.changes(None, p, now)]
        await add_events(conn, [Envelope.new(e, time=now) for e in events])
        report.announced = len(unannounced)
    return report
