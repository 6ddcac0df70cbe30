"""Staff list and filter applications by status, procedure, department and date; an applicant's
list holds only their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.applications.conftest import STAFF
from tests.tokens import applicant

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}
ALERTS = {
    "procedure_code": "BOSAI_MAIL_TOROKU",
    "form": {"email": "a@example.jp", "areas": ["富田"]},
}
TAX = {"procedure_code": "NOZEI_SHOMEI", "channel": "counter"}
TAX_FORM = {"tax_item": "固定資産税", "fiscal_year": 2026}


async def seed(applications: Any) -> dict[str, str]:
    http = applications.http
    ids = {}
    for name, body in (
        ("opinion", OPINION),
        ("alerts", ALERTS),
        ("tax", TAX | {"form": TAX_FORM}),
    ):
        resp = await http.post("/applications", json=body, headers=STAFF)
        assert resp.status_code == 201, resp.text
        ids[name] = resp.json()["id"]
    await http.post(f"/applications/{ids['opinion']}/review", headers=STAFF)
    return ids


async def codes(applications: Any, **params: Any) -> list[str]:
    resp = await applications.http.get("/applications", params=params, headers=STAFF)
    assert resp.status_code == 200, resp.text
    return sorted(a["procedure_code"] for a in resp.json()["items"])


async def test_staff_filter_by_status_procedure_and_department(applications: Any) -> None:
    await seed(applications)
    assert await codes(applications) == ["BOSAI_MAIL_TOROKU", "NOZEI_SHOMEI", "SHIMIN_NO_KOE"]
    assert await codes(applications, status="in_review") == ["SHIMIN_NO_KOE"]
    assert await codes(applications, status="submitted") == ["BOSAI_MAIL_TOROKU", "NOZEI_SHOMEI"]
    assert await codes(applications, procedure_code="NOZEI_SHOMEI") == ["NOZEI_SHOMEI"]
    assert await codes(applications, department="税務部") == ["NOZEI_SHOMEI"]
    assert await codes(applications, department="総務部", status="in_review") == []


async def test_staff_filter_by_submission_date(applications: Any) -> None:
    ids = await seed(applications)
    # Move one application a week back, as if it had come in then.
    week_ago = datetime.now(UTC) - timedelta(days=7)
    await applications.pool.execute(
        "UPDATE applications SET submitted_at = $2 WHERE id = $1", uuid.UUID(ids["tax"]), week_ago
    )
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert await codes(applications, submitted_from=since) == ["BOSAI_MAIL_TOROKU", "SHIMIN_NO_KOE"]
    assert await codes(applications, submitted_to=since) == ["NOZEI_SHOMEI"]
    resp = await applications.http.get(
        "/applications", params={"submitted_from": "2026-11-24T09:00:00"}, headers=STAFF
    )
    assert resp.status_code == 422  # a time without its offset is ambiguous
    assert resp.json()["detail"][0]["loc"] == ["query", "submitted_from"]


async def test_the_list_pages_newest_first(applications: Any) -> None:
    await seed(applications)
    page = (await applications.http.get("/applications", params={"limit": 2}, headers=STAFF)).json()
    assert (page["total"], len(page["items"])) == (3, 2)
    times = [a["submitted_at"] for a in page["items"]]
    assert times == sorted(times, reverse=True)
    rest = (
        await applications.http.get("/applications", params={"offset": 2}, headers=STAFF)
    ).json()
    assert len(rest["items"]) == 1


async def test_an_applicant_lists_only_their_own_whatever_the_filter(applications: Any) -> None:
    await seed(applications)
    citizen = applicant()
    mine = await applications.http.post("/applications", json=OPINION, headers=citizen)
    listed = (
        await applications.http.get(
            "/applications", params={"procedure_code": "NOZEI_SHOMEI"}, headers=citizen
        )
    ).json()
    assert listed["total"] == 0
    listed = (await applications.http.get("/applications", headers=citizen)).json()
    assert [a["id"] for a in listed["items"]] == [mine.json()["id"]]


async def test_counter_and_mail_entries_need_a_staff_credential(applications: Any) -> None:
    """Anyone could otherwise claim the counter channel and skew the online usage rate."""
    http = applications.http
    citizen = applicant()
    for channel in ("counter", "mail"):
        body = TAX | {"channel": channel, "form": TAX_FORM}
        for headers in ({}, citizen, {"Authorization": "Bearer not-a-real-staff-token"}):
            resp = await http.post("/applications", json=body, headers=headers)
            assert resp.status_code == 401, (channel, headers, resp.text)
        assert (await http.post("/applications", json=body, headers=STAFF)).status_code == 201
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 2
