"""OWASP API5, broken function level authorisation: a signed-in applicant is refused every
staff and operator function (403), the public too (401), and staff are let in (the check
is about who calls, not that the route is broken)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.tokens import STAFF, applicant, city_env

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}
DAYS = {"from": "2026-11-01", "to": "2026-11-30"}
TEMPLATE = {"subject": "受付", "text": "受け付けました", "html": "<p>受け付けました</p>"}

STAFF_ROUTES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "payments": [
        ("GET", "/payments", {"params": DAYS}),
        ("GET", "/revenue", {"params": DAYS}),
        ("GET", "/revenue.csv", {"params": DAYS}),
        ("GET", "/settlements", {"params": DAYS}),
        ("GET", "/terminals", {}),
        ("GET", "/receipts/shiminka-2026-000001", {}),
        ("POST", f"/payments/{uuid.uuid4()}/refunds", {"json": {"amount_yen": 300}}),
    ],
    "notifications": [
        ("GET", "/notifications", {}),
        ("GET", f"/notifications/{uuid.uuid4()}", {}),
        ("GET", "/notifications/failed", {}),
        ("GET", "/notifications/pending", {}),
        ("POST", f"/notifications/{uuid.uuid4()}/resend", {}),
        ("GET", f"/notifications/{uuid.uuid4()}/resends", {}),
        ("GET", "/rules", {}),
        ("GET", "/templates/application_submitted/ja", {}),
        ("PUT", "/templates/application_submitted/ja", {"json": TEMPLATE}),
        ("POST", "/templates/application_submitted/ja/preview", {}),
    ],
    "reporting": [
        ("GET", "/metrics", {}),
        ("GET", "/projection/lag", {}),
    ],
}


@pytest.mark.parametrize("service", sorted(STAFF_ROUTES))
async def test_staff_and_operator_routes_refuse_applicants_and_the_public(
    start_service: Any, monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    city_env(monkeypatch)
    http = (await start_service(service)).http
    for method, path, kwargs in STAFF_ROUTES[service]:
        public = await http.request(method, path, **kwargs)
        assert public.status_code == 401, (method, path, public.text)
        citizen = await http.request(method, path, headers=applicant(), **kwargs)
        assert citizen.status_code == 403, (method, path, citizen.text)
        clerk = await http.request(method, path, headers=STAFF, **kwargs)
        assert clerk.status_code not in (401, 403), (method, path, clerk.text)
        assert clerk.status_code < 500, (method, path, clerk.text)


async def test_an_applicant_cannot_take_the_steps_that_are_staffs(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(monkeypatch)
    applications = await start_service("applications")
    http = applications.http
    me = applicant()
    app = (await http.post("/applications", json=OPINION, headers=me)).json()
    url = f"/applications/{app['id']}"
    for step, body in (
        ("review", None),
        ("approve", None),
        ("reject", {"reason": "自分で却下"}),
        ("certificate", None),
    ):
        resp = await http.post(f"{url}/{step}", json=body, headers=me)
        assert resp.status_code == 403, (step, resp.text)
    # Its own application is untouched; a counter entry cannot be claimed by a citizen.
    assert (await http.get(url, headers=me)).json()["status"] == "submitted"
    counter = await http.post("/applications", json=OPINION | {"channel": "counter"}, headers=me)
    assert counter.status_code == 401
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 1
    # The same steps with a staff credential work.
    assert (await http.post(f"{url}/review", headers=STAFF)).status_code == 200


async def test_public_routes_stay_public(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(monkeypatch)
    applications = (await start_service("applications")).http
    assert (await applications.get("/procedures", params={"limit": 1})).status_code == 200
    verify = {"certificate_number": "072036-2026-0000001", "verification_code": "ABCDE-FGH23"}
    answer = await applications.post("/certificates/verify", json=verify)
    assert (answer.status_code, answer.json()["genuine"]) == (200, False)
    reporting = (await start_service("reporting")).http
    assert (await reporting.get("/kpi/applications/by-channel")).status_code == 200
    assert (await reporting.get("/open-data/kpi")).status_code == 200
    payments = (await start_service("payments")).http
    assert (await payments.get("/facilities")).status_code == 200
