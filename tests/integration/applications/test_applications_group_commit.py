"""Group commit of online submissions (services.applications.submissions): submissions that
arrive together are written in one statement, yet each is stored once with its own events and
trace context, a retry replays its first answer, and a row PostgreSQL refuses fails only its
own request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from contracts.applications import Channel
from contracts.envelope import Envelope
from services.applications import domain
from services.applications.procedures import ProcedureCache
from services.applications.store.applications import KeyClaim, NewSubmission
from services.applications.submissions import SubmissionWriter
from tests.tokens import applicant

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}
SUBMITTED = "%ApplicationSubmitted%"


def traceparent(n: int) -> tuple[str, str]:
    """A W3C traceparent of a trace of its own, and that trace's id."""
    trace_id = f"{n + 1:032x}"
    return f"00-{trace_id}-{n + 1:016x}-01", trace_id


def opinion(n: int) -> dict[str, Any]:
    return {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": f"意見 {n}"}}


async def submitted_rows(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    """ApplicationSubmitted outbox rows by application id: payload and trace headers."""
    rows = await pool.fetch(
        "SELECT payload, trace_headers::text FROM outbox WHERE ce_type LIKE $1", SUBMITTED
    )
    found = {}
    for r in rows:
        payload = json.loads(r["payload"])
        found[payload["application_id"]] = {
            "payload": payload,
            "trace": json.loads(r["trace_headers"]),
        }
    return found


async def warm(applications: Any) -> SubmissionWriter:
    """One submission (it reads the procedure into the cache); the service's writer."""
    resp = await applications.http.post("/applications", json=OPINION, headers=applicant())
    assert resp.status_code == 201, resp.text
    writer: SubmissionWriter = applications.ctx.provide(
        SubmissionWriter, lambda: SubmissionWriter(applications.pool)
    )
    return writer


async def test_concurrent_submissions_are_each_stored_once_with_their_own_event_and_trace(
    applications: Any,
) -> None:
    writer = await warm(applications)
    sent = []
    for n in range(30):
        header, trace_id = traceparent(n)
        headers = applicant() | {"Idempotency-Key": f"k-{n}", "traceparent": header}
        sent.append(
            (trace_id, applications.http.post("/applications", json=opinion(n), headers=headers))
        )
    responses = await asyncio.gather(*(request for _, request in sent))

    assert [r.status_code for r in responses] == [201] * 30
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 30
    assert writer.written == 30  # all through the group commit, none alone
    stored = await applications.pool.fetch(
        "SELECT id::text, form FROM applications WHERE id = ANY($1::uuid[])", ids
    )
    assert {r["id"]: json.loads(r["form"])["body"] for r in stored} == {
        ids[n]: f"意見 {n}" for n in range(30)
    }
    events = await submitted_rows(applications.pool)
    for n, app_id in enumerate(ids):
        assert events[app_id]["payload"]["procedure_code"] == "SHIMIN_NO_KOE"
        # Each event keeps the trace of the request that made it, not its batch-mates'.
        assert events[app_id]["trace"]["traceparent"].split("-")[1] == sent[n][0]
    keys = await applications.pool.fetch("SELECT key, response FROM idempotency_keys")
    assert len(keys) == 30
    assert {json.loads(k["response"])["id"] for k in keys} == set(ids)


async def test_a_retry_replays_the_answer_its_batch_committed(applications: Any) -> None:
    await warm(applications)
    citizen = applicant()
    first = await asyncio.gather(
        *(
            applications.http.post(
                "/applications", json=opinion(n), headers=citizen | {"Idempotency-Key": f"r-{n}"}
            )
            for n in range(5)
        )
    )
    again = await asyncio.gather(
        *(
            applications.http.post(
                "/applications", json=opinion(n), headers=citizen | {"Idempotency-Key": f"r-{n}"}
            )
            for n in range(5)
        )
    )
    assert [r.status_code for r in again] == [201] * 5
    assert [r.json() for r in again] == [r.json() for r in first]
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 6
    assert len(await submitted_rows(applications.pool)) == 6


async def test_one_key_twice_in_a_burst_is_one_application_and_another_body_is_refused(
    applications: Any,
) -> None:
    await warm(applications)
    citizen = applicant()
    same = citizen | {"Idempotency-Key": "twice"}
    responses = await asyncio.gather(
        applications.http.post("/applications", json=opinion(1), headers=same),
        applications.http.post("/applications", json=opinion(1), headers=same),
        applications.http.post("/applications", json=opinion(2), headers=same),
        applications.http.post("/applications", json=opinion(3), headers=citizen),
    )
    codes = [r.status_code for r in responses]
    assert codes[0] == codes[1] == 201
    assert responses[0].json() == responses[1].json()
    assert codes[2] == 422
    assert responses[2].json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert codes[3] == 201
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 3


async def test_a_row_postgresql_refuses_fails_only_its_own_request(applications: Any) -> None:
    writer = await warm(applications)
    # Make PostgreSQL refuse one submission (as it refuses text it cannot store): the whole
    # statement of its batch fails, and its batch-mates must not.
    await applications.pool.execute(
        """ALTER TABLE applications ADD CONSTRAINT no_poison
           CHECK (form->>'body' IS DISTINCT FROM 'poison')"""
    )
    poison = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "poison"}}
    requests = [opinion(n) for n in range(8)]
    requests.insert(4, poison)
    outcomes = await asyncio.gather(
        *(
            applications.http.post(
                "/applications", json=body, headers=applicant() | {"Idempotency-Key": f"p-{n}"}
            )
            for n, body in enumerate(requests)
        ),
        return_exceptions=True,
    )
    refused = outcomes.pop(4)
    assert isinstance(refused, asyncpg.CheckViolationError)  # a 500, as without batches
    assert [getattr(r, "status_code", r) for r in outcomes] == [201] * 8
    assert writer.fallbacks >= 1
    ids = {r.json()["id"] for r in outcomes}  # type: ignore[union-attr]
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 9
    assert set(await submitted_rows(applications.pool)) >= ids
    # The refused request stored nothing, so its key is free for a corrected retry.
    assert await applications.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 8


# -- the writer itself ------------------------------------------------------------------------


async def decided(applications: Any, n: int, key: str | None = None) -> NewSubmission:
    """A submission to SHIMIN_NO_KOE decided as the route decides it."""
    cache = applications.ctx.provide(ProcedureCache, ProcedureCache)
    async with applications.pool.acquire() as conn:
        cached = await cache.get(conn, "SHIMIN_NO_KOE")
    assert cached is not None
    app, event = domain.submit(
        cached.procedure, Channel.ONLINE, datetime.now(UTC), form=opinion(n)["form"]
    )
    claim = KeyClaim(key, f"hash-{n}", 201, {"id": str(app.id)}) if key else None
    envelope = Envelope.new(event, time=app.submitted_at)
    trace = json.dumps({"traceparent": traceparent(n)[0]})
    return NewSubmission(app, cached.version, claim, [envelope], trace)


async def test_submissions_arriving_together_go_in_one_statement(applications: Any) -> None:
    writer = SubmissionWriter(applications.pool, max_in_flight=1)
    subs = [await decided(applications, n, key=f"w-{n}") for n in range(10)]
    written = await asyncio.gather(*(writer.write(s) for s in subs))
    assert written == [True] * 10
    assert (writer.batches, writer.written) == (1, 10)
    assert await writer.write(await decided(applications, 10)) is True
    assert (writer.batches, writer.written) == (2, 11)
    events = await submitted_rows(applications.pool)
    for n, sub in enumerate(subs):
        assert events[str(sub.application.id)]["trace"]["traceparent"] == traceparent(n)[0]


async def test_a_writer_keeps_its_connection_for_a_submission_that_follows_soon(
    applications: Any,
) -> None:
    lingering = SubmissionWriter(applications.pool, linger_s=2)
    for n in range(3):
        assert await lingering.write(await decided(applications, n)) is True
    assert (lingering.flights, lingering.batches) == (1, 3)
    at_once = SubmissionWriter(applications.pool, linger_s=0)
    for n in range(3, 6):
        assert await at_once.write(await decided(applications, n)) is True
    assert (at_once.flights, at_once.batches) == (3, 3)
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 6


async def test_a_key_already_claimed_or_twice_in_a_batch_is_left_to_the_one_by_one_path(
    applications: Any,
) -> None:
    writer = SubmissionWriter(applications.pool, max_in_flight=1)
    taken = await decided(applications, 0, key="taken")
    assert await writer.write(taken)
    again = await decided(applications, 1, key="taken")
    first = await decided(applications, 2, key="dup")
    second = await decided(applications, 3, key="dup")
    assert await writer.write(again) is False
    assert list(await asyncio.gather(writer.write(first), writer.write(second))) == [True, False]
    stored = await applications.pool.fetch("SELECT id FROM applications")
    assert {r["id"] for r in stored} == {taken.application.id, first.application.id}
    assert await applications.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 2


async def test_a_batch_postgresql_refuses_writes_nothing_and_sends_everyone_alone(
    applications: Any,
) -> None:
    writer = SubmissionWriter(applications.pool, max_in_flight=1)
    good = [await decided(applications, n) for n in range(3)]
    decided_bad = await decided(applications, 9)
    # NUL: PostgreSQL's jsonb cannot store it ("unsupported Unicode escape sequence").
    bad = dataclasses.replace(
        decided_bad,
        application=dataclasses.replace(decided_bad.application, form={"body": "\x00"}),
    )
    results = await asyncio.gather(*(writer.write(s) for s in [*good, bad]))
    assert results == [False] * 4
    assert (writer.fallbacks, writer.written) == (1, 0)
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 0
    # The writer goes on with the next batch.
    assert await writer.write(await decided(applications, 5)) is True
    ids = [s.application.id for s in [*good, bad]]
    assert (
        await applications.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE payload::jsonb->>'application_id' = ANY($1::text[])",
            [str(i) for i in ids],
        )
        == 0
    )


async def test_an_unreachable_database_fails_the_batch_instead_of_retrying_it(
    applications: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SubmissionWriter(applications.pool)
    sub = await decided(applications, 0)

    async def connection_lost(*_args: Any) -> set[uuid.UUID]:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    monkeypatch.setattr(
        "services.applications.store.applications.insert_submissions", connection_lost
    )
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await writer.write(sub)
    assert writer.fallbacks == 0


async def test_each_application_s_events_keep_their_order_in_the_outbox(
    applications: Any,
) -> None:
    """An online application with a fee has two events, ApplicationSubmitted then
    ApplicationPaymentRequested: a batch keeps each application's events in that order."""
    writer = SubmissionWriter(applications.pool)
    subs = []
    for n in range(6):
        sub = await decided(applications, n)
        cached = applications.ctx.provide(ProcedureCache, ProcedureCache).peek("SHIMIN_NO_KOE")
        assert cached is not None
        procedure = dataclasses.replace(cached.procedure, fee_yen=300)
        with_fee = dataclasses.replace(sub.application, fee_yen=300)
        asked_app, asked = domain.request_fee(with_fee, procedure, with_fee.submitted_at)
        events = [*sub.events, *(Envelope.new(e) for e in asked)]
        subs.append(dataclasses.replace(sub, application=asked_app, events=events))
    assert await asyncio.gather(*(writer.write(s) for s in subs)) == [True] * 6
    rows = await applications.pool.fetch(
        "SELECT payload::jsonb->>'application_id' AS app, ce_type FROM outbox ORDER BY seq"
    )
    assert [(r["app"], r["ce_type"].split(".")[-2]) for r in rows] == [
        (str(s.application.id), kind)
        for s in subs
        for kind in ("ApplicationSubmitted", "ApplicationPaymentRequested")
    ]
