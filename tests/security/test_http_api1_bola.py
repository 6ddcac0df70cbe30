"""OWASP API1, broken object-level authorisation: an applicant reaches only their own objects.

Applicant A and applicant B are both signed in (valid tokens from the login gateway); B knows
A's ids and tries A's application, its certificate, A's contact and A's payment request.
Someone else's object answers exactly as a missing one (404), so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope
from tests.integration.helpers import publish_envelope, wait_for
from tests.tokens import STAFF, applicant, city_env

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}


@pytest.fixture
def city(monkeypatch: pytest.MonkeyPatch) -> None:
    city_env(monkeypatch)


async def test_b_cannot_read_list_withdraw_or_request_the_fee_of_as_application(
    city: None, start_service: Any
) -> None:
    http = (await start_service("applications")).http
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    a, b = applicant(a_id), applicant(b_id)
    app = (await http.post("/applications", json=OPINION, headers=a)).json()
    url = f"/applications/{app['id']}"

    seen = await http.get(url, headers=b)
    assert (seen.status_code, seen.json()["detail"]) == (404, f"no application {app['id']}")
    assert (await http.post(f"{url}/withdraw", headers=b)).status_code == 404
    assert (await http.post(f"{url}/fee-request", headers=b)).status_code == 404
    assert (await http.get("/applications", headers=b)).json()["total"] == 0
    # Nothing B did changed A's application, and A still sees it.
    mine = await http.get(url, headers=a)
    assert (mine.status_code, mine.json()["status"]) == (200, "submitted")
    assert [x["id"] for x in (await http.get("/applications", headers=a)).json()["items"]] == [
        app["id"]
    ]


async def test_b_cannot_download_as_certificate(city: None, start_service: Any) -> None:
    http = (await start_service("applications")).http
    a, b = applicant(), applicant()
    app = (await http.post("/applications", json=OPINION, headers=a)).json()
    url = f"/applications/{app['id']}/certificate.pdf"
    # A is told there is no certificate yet; B is told there is no such application at all.
    assert (await http.get(url, headers=a)).json()["detail"] == "no certificate issued yet"
    theirs = await http.get(url, headers=b)
    assert (theirs.status_code, theirs.json()["detail"]) == (404, f"no application {app['id']}")
    assert (await http.get(url)).status_code == 404  # nor the public


async def test_b_cannot_read_change_or_delete_as_contact(city: None, start_service: Any) -> None:
    http = (await start_service("notifications")).http
    a_id = uuid.uuid4()
    a, b = applicant(a_id), applicant()
    url = f"/contacts/{a_id}"
    contact = {"email": "taro@example.jp", "phone": "09012345678", "language": "ja"}
    assert (await http.put(url, json=contact, headers=a)).status_code == 200

    read = await http.get(url, headers=b)
    assert read.status_code == 404
    assert "taro" not in read.text
    assert (await http.put(url, json={"email": "evil@example.jp"}, headers=b)).status_code == 403
    assert (await http.delete(url, headers=b)).status_code == 404
    assert (await http.get(url)).status_code == 401  # the public must sign in
    kept = await http.get(url, headers=a)
    assert (kept.status_code, kept.json()["email"]) == (200, "taro@example.jp")
    assert (await http.get(url, headers=STAFF)).json()["phone"] == "09012345678"


async def test_b_cannot_read_as_payment_request(
    city: None, start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    payments = await start_service("payments")
    a_id = uuid.uuid4()
    requested = ApplicationPaymentRequestedV1(
        application_id=uuid.uuid4(),
        procedure_code="JUMINHYO",
        amount_yen=300,
        fee_item="住民票の写し",
        facility_code="shiminka",
        requested_at=datetime.now(UTC),
        applicant_id=a_id,
    )
    await publish_envelope(js, namespace, Envelope.new(requested, source="/cityhall/applications"))
    url = f"/payment-requests/{requested.application_id}"

    async def created() -> bool:
        return (await payments.http.get(url, headers=STAFF)).status_code == 200

    await wait_for(created)
    mine = await payments.http.get(url, headers=applicant(a_id))
    assert (mine.status_code, mine.json()["amount_yen"]) == (200, 300)
    assert (await payments.http.get(url, headers=applicant())).status_code == 404
    assert (await payments.http.get(url)).status_code == 404
