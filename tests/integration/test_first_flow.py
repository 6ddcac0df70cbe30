"""The thin flow: POST an application -> outbox -> JetStream -> reporting's inbox -> KPI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.js import JetStreamContext

from contracts import ApplicationSubmittedV1
from contracts.applications import ApplicationPaymentRequestedV1
from contracts.subjects import APPLICATIONS


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def test_submitted_application_is_counted_by_channel(
    start_service: Any, js: JetStreamContext, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", "counter01=first-flow-staff-token")
    applications = await start_service("applications")
    reporting = await start_service("reporting")
    staff = {"Authorization": "Bearer first-flow-staff-token"}  # counter entries are staff's

    for channel in ("online", "online", "counter"):
        resp = await applications.http.post(
            "/applications",
            json={"procedure_code": "JUMINHYO", "channel": channel},
            headers=staff if channel == "counter" else {},
        )
        assert resp.status_code == 201, resp.text

    async def counted() -> dict[str, Any] | None:
        body = (await reporting.http.get("/kpi/applications/by-channel")).json()
        return body if body["total"] == 3 else None

    body = await wait_for(counted)
    assert body == {"online": 2, "counter": 1, "mail": 0, "total": 3, "online_share": 0.6667}

    stream = APPLICATIONS.stream_name(namespace)
    info = await js.stream_info(stream)
    types = [
        (await js.get_msg(stream, seq=seq)).headers["ce-type"]  # type: ignore[index]
        for seq in range(1, info.state.messages + 1)
    ]
    # Each online JUMINHYO (300 yen) also asks payments for its fee; the counter one does not.
    assert types.count(ApplicationSubmittedV1.event_type) == 3
    assert types.count(ApplicationPaymentRequestedV1.event_type) == 2
    assert len(types) == 5
    msg = await js.get_msg(stream, seq=1)
    assert msg.headers is not None
    assert msg.headers["ce-type"] == ApplicationSubmittedV1.event_type
    assert msg.headers["Nats-Msg-Id"] == msg.headers["ce-id"]
    assert msg.headers["ce-specversion"] == "1.0"
    assert "traceparent" in msg.headers
    assert json.loads(msg.data)["procedure_code"] == "JUMINHYO"
