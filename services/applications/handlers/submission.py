"""Submitting an application (POST /applications) and issuing the challenge a signed one
needs: decided before the database is touched, written by the group commit or, when it cannot
be, alone in a transaction of its own, with its challenge taken and used and its key claimed."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from contracts.applications import SubmitApplication
from contracts.envelope import Envelope, Event
from services.applications import domain, identity, signatures
from services.applications.domain import Application, ApplicationError, Decision
from services.applications.forms import FormInvalid
from services.applications.handlers.transactions import IdempotencyKey, UnknownProcedure, replay
from services.applications.identity import Challenge, IdentityRefused, VerifiedIdentity
from services.applications.procedures import CachedProcedure, ProcedureCache
from services.applications.signatures import TrustConfig
from services.applications.store.applications import (
    KeyClaim,
    NewSubmission,
    SubmissionWrite,
    insert_submission,
)
from services.applications.store.idempotency_keys import claim_idempotency_key, stored_response
from services.applications.store.identity_challenges import (
    insert_challenge,
    take_challenge,
    use_challenge,
)
from services.applications.submissions import SubmissionWriter
from services.runtime.outbox import add_events
from services.runtime.service import ServiceContext
from services.runtime.telemetry import current_trace_headers

log = logging.getLogger(__name__)


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
                return replay(stored, idempotency)
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
                        return replay(stored, idempotency)
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
                    return replay(stored, idempotency)
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
