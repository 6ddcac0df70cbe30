"""OWASP API3, broken object property level authorisation: a request body sets only what its
caller may set (extra fields are 422, naming the field, and change nothing), and a response
shows nothing of anyone else."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.tokens import STAFF, applicant, city_env

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}


@pytest.fixture
def city(monkeypatch: pytest.MonkeyPatch) -> None:
    city_env(monkeypatch)


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "approved"},
        {"applicant_id": str(uuid.uuid4())},
        {"fee_yen": 0},
        {"id": str(uuid.uuid4())},
        {"paid_at": "2026-11-24T09:00:00+09:00"},
        {"certificate_number": "072036-2026-0000001"},
        {"identity": {"name": "郡山太郎", "signature": "x", "certificate_chain": ["x"]}},
    ],
    ids=lambda e: next(iter(e)),
)
async def test_a_submission_cannot_set_what_the_city_decides(
    city: None, start_service: Any, extra: dict[str, Any]
) -> None:
    applications = await start_service("applications")
    resp = await applications.http.post("/applications", json=OPINION | extra, headers=applicant())
    assert resp.status_code == 422, resp.text
    field = next(iter(extra))
    assert any(
        field in [str(p) for p in e["loc"]] or field == "identity" for e in resp.json()["detail"]
    )
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 0


async def test_a_rejection_carries_its_reason_only(city: None, start_service: Any) -> None:
    applications = await start_service("applications")
    http = applications.http
    app = (await http.post("/applications", json=OPINION, headers=applicant())).json()
    await http.post(f"/applications/{app['id']}/review", headers=STAFF)
    resp = await http.post(
        f"/applications/{app['id']}/reject",
        json={"reason": "記載不備", "status": "approved", "decided_at": "2020-01-01T00:00:00Z"},
        headers=STAFF,
    )
    assert resp.status_code == 422
    seen = (await http.get(f"/applications/{app['id']}", headers=STAFF)).json()
    assert (seen["status"], seen["decided_at"]) == ("in_review", None)


async def test_a_contact_cannot_name_another_applicant(city: None, start_service: Any) -> None:
    http = (await start_service("notifications")).http
    me, other = uuid.uuid4(), uuid.uuid4()
    resp = await http.put(
        f"/contacts/{me}",
        json={"email": "taro@example.jp", "applicant_id": str(other)},
        headers=applicant(me),
    )
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "applicant_id"]
    assert (await http.get(f"/contacts/{other}", headers=STAFF)).status_code == 404
    assert (await http.get(f"/contacts/{me}", headers=STAFF)).status_code == 404


async def test_a_refund_cannot_name_its_staff_or_totals(city: None, start_service: Any) -> None:
    http = (await start_service("payments")).http
    resp = await http.post(
        f"/payments/{uuid.uuid4()}/refunds",
        json={"amount_yen": 300, "staff_id": "kaikei01", "refunded_total_yen": 0},
        headers=STAFF,
    )
    assert resp.status_code == 422  # refused as a body, before the payment is even looked up
    assert {e["loc"][-1] for e in resp.json()["detail"]} == {"staff_id", "refunded_total_yen"}


async def test_an_applicants_view_shows_no_account_ids_and_only_their_own(
    city: None, start_service: Any
) -> None:
    http = (await start_service("applications")).http
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    for who in (a_id, b_id):
        await http.post("/applications", json=OPINION, headers=applicant(who))
    page = await http.get("/applications", headers=applicant(a_id))
    assert page.json()["total"] == 1
    assert str(a_id) not in page.text
    assert str(b_id) not in page.text
    assert "applicant_id" not in page.json()["items"][0]
    # Staff see both applications, still without account ids in the view.
    staff = await http.get("/applications", headers=STAFF)
    assert staff.json()["total"] == 2
    assert str(b_id) not in staff.text
