"""The application state machine over HTTP: each step an event through the outbox, illegal
steps refused with 409, staff steps behind a staff credential."""

from __future__ import annotations

import json
from typing import Any

from nats.js import JetStreamContext

from contracts.applications import (
    ApplicationApprovedV1,
    ApplicationInReviewV1,
    ApplicationRejectedV1,
    ApplicationSubmittedV1,
    ApplicationWithdrawnV1,
)
from contracts.subjects import APPLICATIONS
from tests.integration.applications.conftest import STAFF
from tests.integration.helpers import wait_for
from tests.tokens import applicant

CITIZEN = applicant()
FEE_FREE = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}


async def published_types(js: JetStreamContext, namespace: str, subject_of: Any) -> list[str]:
    """The ce-type of every event published about one application, in order."""
    stream = APPLICATIONS.stream_name(namespace)
    info = await js.stream_info(stream)
    types = []
    for seq in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq=seq)
        if msg.headers and msg.headers.get("ce-subject") == subject_of:
            types.append(msg.headers["ce-type"])
    return types


async def test_a_fee_free_application_goes_through_review_to_approval(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    http = applications.http
    resp = await http.post("/applications", json=FEE_FREE, headers=CITIZEN)
    assert resp.status_code == 201, resp.text
    app = resp.json()
    assert (app["status"], app["fee_yen"]) == ("submitted", 0)

    resp = await http.post(f"/applications/{app['id']}/review", headers=STAFF)
    assert resp.json()["status"] == "in_review", resp.text
    resp = await http.post(f"/applications/{app['id']}/approve", headers=STAFF)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "approved"
    assert resp.json()["decided_at"] is not None

    wanted = [
        ApplicationSubmittedV1.event_type,
        ApplicationInReviewV1.event_type,
        ApplicationApprovedV1.event_type,
    ]

    async def all_published() -> list[str] | None:
        types = await published_types(js, namespace, app["id"])
        return types if types == wanted else None

    assert await wait_for(all_published) == wanted


async def test_rejection_carries_its_reason_to_the_applicant_and_the_bus(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    http = applications.http
    app = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    await http.post(f"/applications/{app['id']}/review", headers=STAFF)
    resp = await http.post(
        f"/applications/{app['id']}/reject", json={"reason": "内容が確認できません"}, headers=STAFF
    )
    assert resp.status_code == 200, resp.text
    seen = (await http.get(f"/applications/{app['id']}", headers=CITIZEN)).json()
    assert (seen["status"], seen["rejection_reason"]) == ("rejected", "内容が確認できません")

    async def rejected_event() -> dict[str, Any] | None:
        stream = APPLICATIONS.stream_name(namespace)
        info = await js.stream_info(stream)
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            if msg.headers and msg.headers["ce-type"] == ApplicationRejectedV1.event_type:
                body: dict[str, Any] = json.loads(msg.data or b"{}")
                return body
        return None

    event = await wait_for(rejected_event)
    assert event is not None
    assert event["reason"] == "内容が確認できません"


async def test_a_rejection_without_a_reason_is_refused_naming_the_field(applications: Any) -> None:
    http = applications.http
    app = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    await http.post(f"/applications/{app['id']}/review", headers=STAFF)
    resp = await http.post(f"/applications/{app['id']}/reject", json={}, headers=STAFF)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "reason"]


async def test_the_applicant_withdraws_before_review_but_not_after(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    http = applications.http
    first = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    resp = await http.post(f"/applications/{first['id']}/withdraw", headers=CITIZEN)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "withdrawn"

    second = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    await http.post(f"/applications/{second['id']}/review", headers=STAFF)
    resp = await http.post(f"/applications/{second['id']}/withdraw", headers=CITIZEN)
    assert resp.status_code == 409
    assert "in_review: cannot withdraw" in resp.json()["detail"]

    async def withdrawal_published() -> bool:
        types = await published_types(js, namespace, first["id"])
        return ApplicationWithdrawnV1.event_type in types

    assert await wait_for(withdrawal_published)


async def test_illegal_transitions_are_409_and_change_nothing(applications: Any) -> None:
    http = applications.http
    app = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    url = f"/applications/{app['id']}"
    # Not reviewed yet: cannot approve, reject or issue.
    assert (await http.post(f"{url}/approve", headers=STAFF)).status_code == 409
    resp = await http.post(f"{url}/reject", json={"reason": "x"}, headers=STAFF)
    assert resp.status_code == 409
    await http.post(f"{url}/review", headers=STAFF)
    await http.post(f"{url}/approve", headers=STAFF)
    # Approved: cannot be reviewed again, rejected or withdrawn; a non-certificate procedure
    # issues no certificate.
    assert (await http.post(f"{url}/review", headers=STAFF)).status_code == 409
    assert (await http.post(f"{url}/withdraw", headers=CITIZEN)).status_code == 409
    resp = await http.post(f"{url}/certificate", headers=STAFF)
    assert resp.status_code == 409
    assert "issues no certificate" in resp.json()["detail"]
    assert (await http.get(url, headers=CITIZEN)).json()["status"] == "approved"


async def test_staff_steps_need_a_staff_credential(applications: Any) -> None:
    http = applications.http
    app = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    url = f"/applications/{app['id']}"
    # A signed-in applicant is known but not allowed (403); a bad credential is unknown (401).
    assert (await http.post(f"{url}/review", headers=CITIZEN)).status_code == 403
    wrong = {"Authorization": "Bearer not-a-staff-token-at-all"}
    assert (await http.post(f"{url}/review", headers=wrong)).status_code == 401
    assert (await http.get("/applications")).status_code == 401
    assert (await http.get(url, headers=CITIZEN)).json()["status"] == "submitted"


async def test_an_applicant_cannot_read_or_withdraw_someone_elses_application(
    applications: Any,
) -> None:
    http = applications.http
    app = (await http.post("/applications", json=FEE_FREE, headers=CITIZEN)).json()
    other = applicant()
    url = f"/applications/{app['id']}"
    assert (await http.get(url, headers=other)).status_code == 404
    assert (await http.get(url)).status_code == 404
    assert (await http.post(f"{url}/withdraw", headers=other)).status_code == 404
    mine = (await http.get("/applications", headers=other)).json()
    assert mine["total"] == 0
    assert (await http.get("/applications", headers=CITIZEN)).json()["total"] == 1
    assert (await http.get(url, headers=STAFF)).status_code == 200
