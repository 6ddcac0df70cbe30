"""Idempotency-Key on POSTs, and each application checked against its procedure's form."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.applications.conftest import STAFF
from tests.tokens import applicant

CITIZEN = applicant()
OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}


async def test_a_retry_with_the_same_key_replays_the_first_response(applications: Any) -> None:
    http = applications.http
    headers = CITIZEN | {"Idempotency-Key": "retry-1"}
    first = await http.post("/applications", json=OPINION, headers=headers)
    again = await http.post("/applications", json=OPINION, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    count = await applications.pool.fetchval("SELECT count(*) FROM applications")
    assert count == 1
    submitted = await applications.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE ce_type LIKE '%ApplicationSubmitted%'"
    )
    assert submitted == 1


async def test_concurrent_retries_with_one_key_make_one_application(applications: Any) -> None:
    http = applications.http
    headers = CITIZEN | {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(http.post("/applications", json=OPINION, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 1


async def test_the_same_key_with_another_body_is_refused(applications: Any) -> None:
    http = applications.http
    headers = CITIZEN | {"Idempotency-Key": "k-2"}
    assert (await http.post("/applications", json=OPINION, headers=headers)).status_code == 201
    other = OPINION | {"form": {"subject": "公園", "body": "もっと木陰を"}}
    resp = await http.post("/applications", json=other, headers=headers)
    assert resp.status_code == 422
    detail = resp.json()["detail"][0]
    assert detail["loc"] == ["header", "Idempotency-Key"]
    assert "different request" in detail["msg"]
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 1


async def test_the_same_key_with_another_body_that_would_be_refused_names_the_key(
    applications: Any,
) -> None:
    http = applications.http
    headers = CITIZEN | {"Idempotency-Key": "k-3"}
    assert (await http.post("/applications", json=OPINION, headers=headers)).status_code == 201
    incomplete = OPINION | {"form": {"subject": "公園"}}
    resp = await http.post("/applications", json=incomplete, headers=headers)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_keys_belong_to_their_caller(applications: Any) -> None:
    http = applications.http
    mine = await http.post(
        "/applications", json=OPINION, headers=CITIZEN | {"Idempotency-Key": "x"}
    )
    theirs = await http.post(
        "/applications",
        json=OPINION,
        headers=applicant() | {"Idempotency-Key": "x"},
    )
    assert mine.json()["id"] != theirs.json()["id"]


async def test_a_staff_step_retried_with_its_key_is_not_a_conflict(applications: Any) -> None:
    http = applications.http
    app = (await http.post("/applications", json=OPINION, headers=CITIZEN)).json()
    headers = STAFF | {"Idempotency-Key": f"review-{app['id']}"}
    first = await http.post(f"/applications/{app['id']}/review", headers=headers)
    again = await http.post(f"/applications/{app['id']}/review", headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "in_review"
    # Without the key, the same step is a second, illegal transition.
    assert (await http.post(f"/applications/{app['id']}/review", headers=STAFF)).status_code == 409


async def test_a_refused_request_keeps_its_key_free_for_a_corrected_retry(
    applications: Any,
) -> None:
    http = applications.http
    headers = CITIZEN | {"Idempotency-Key": "fix-and-retry"}
    bad = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園"}}
    assert (await http.post("/applications", json=bad, headers=headers)).status_code == 422
    assert await applications.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_kept_keys_are_kept_at_least_a_day(applications: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from services.applications.store.idempotency_keys import forget_idempotency_keys

    http = applications.http
    await http.post("/applications", json=OPINION, headers=CITIZEN | {"Idempotency-Key": "day"})
    removed = await forget_idempotency_keys(
        applications.pool, datetime.now(UTC) - timedelta(hours=24)
    )
    assert removed == 0
    assert await applications.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 1


async def test_each_bad_form_field_is_named(applications: Any) -> None:
    http = applications.http
    form = {"honseki": "", "copies": 0, "colour": "red"}
    resp = await http.post(
        "/applications", json={"procedure_code": "KOSEKI_TOHON", "form": form}, headers=CITIZEN
    )
    assert resp.status_code == 422, resp.text
    fields = {".".join(d["loc"]): d["msg"] for d in resp.json()["detail"]}
    assert set(fields) == {
        "body.form.honseki",
        "body.form.copies",
        "body.form.colour",
        "body.form.hittosha",
    }
    assert fields["body.form.hittosha"] == "this field is required"
    assert fields["body.form.colour"] == "this field is not part of the form"
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 0


async def test_a_form_is_checked_against_its_own_procedure(applications: Any) -> None:
    http = applications.http
    # The same answers fit 戸籍謄本's form but not 納税証明書's.
    form = {"honseki": "郡山市朝日一丁目23番", "hittosha": "郡山太郎"}
    counter = {"channel": "counter", "form": form}
    kos = {"procedure_code": "KOSEKI_TOHON"} | counter
    ok = await http.post("/applications", json=kos, headers=STAFF)
    assert ok.status_code == 201, ok.text
    nozei = {"procedure_code": "NOZEI_SHOMEI"} | counter
    bad = await http.post("/applications", json=nozei, headers=STAFF)
    assert bad.status_code == 422
    fields = {".".join(d["loc"]) for d in bad.json()["detail"]}
    assert {"body.form.tax_item", "body.form.fiscal_year", "body.form.honseki"} <= fields


async def test_an_unknown_procedure_is_refused_naming_the_field(applications: Any) -> None:
    resp = await applications.http.post("/applications", json={"procedure_code": "NO_SUCH"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "procedure_code"]


async def test_text_postgresql_cannot_store_is_refused_naming_the_field(applications: Any) -> None:
    """NUL and unpaired surrogates can be sent in JSON (\\u0000, \\ud800) but PostgreSQL cannot
    store them: a 422 naming the field, not a 500 from the database."""
    http = applications.http
    for raw, why in (("\\u0000", "NUL"), ("\\ud800", "unpaired surrogate")):
        body = (
            '{"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "a'
            + raw
            + 'b"}}'
        )
        resp = await http.post(
            "/applications",
            content=body.encode(),
            headers=CITIZEN | {"content-type": "application/json"},
        )
        assert resp.status_code == 422, (raw, resp.status_code, resp.text)
        [problem] = resp.json()["detail"]
        assert problem["loc"] == ["body", "form", "body"]
        assert why in problem["msg"]
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 0
