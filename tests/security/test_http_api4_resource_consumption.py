"""OWASP API4, unrestricted resource consumption: request bodies are bounded (413, declared or
chunked), every list has a page-size cap (422 past it), and each caller has a rate limit
(429 with Retry-After, then served again once the window has passed)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.tokens import STAFF, applicant, city_env

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}
LIMIT = 4096


def too_big() -> bytes:
    return json.dumps(OPINION | {"form": {"subject": "公園", "body": "あ" * LIMIT}}).encode()


# -- body size ------------------------------------------------------------------------------


@pytest.fixture
async def small_bodies(start_service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    city_env(monkeypatch, APPLICATIONS_MAX_BODY_BYTES=str(LIMIT))
    return await start_service("applications")


async def test_a_body_declared_too_large_is_413_and_stores_nothing(small_bodies: Any) -> None:
    resp = await small_bodies.http.post(
        "/applications",
        content=too_big(),
        headers=applicant() | {"content-type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json() == {"detail": f"request body larger than {LIMIT} bytes"}
    assert await small_bodies.pool.fetchval("SELECT count(*) FROM applications") == 0


async def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(
    small_bodies: Any,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        body = too_big()
        for i in range(0, len(body), 1024):
            sent += 1
            yield body[i : i + 1024]

    resp = await small_bodies.http.post(
        "/applications",
        content=chunks(),
        headers=applicant() | {"content-type": "application/json"},
    )
    assert "content-length" not in resp.request.headers  # chunked
    assert resp.status_code == 413
    assert resp.json()["detail"] == f"request body larger than {LIMIT} bytes"
    assert await small_bodies.pool.fetchval("SELECT count(*) FROM applications") == 0
    ok = await small_bodies.http.post("/applications", json=OPINION, headers=applicant())
    assert ok.status_code == 201  # a body under the limit still goes through


async def test_the_body_limit_covers_routes_that_read_the_raw_body(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(monkeypatch, PAYMENTS_MAX_BODY_BYTES=str(LIMIT), PAYMENT_PROVIDER_SECRET="s" * 32)
    http = (await start_service("payments")).http
    resp = await http.post("/webhooks/provider", content=b"{" + b" " * (2 * LIMIT) + b"}")
    assert resp.status_code == 413


# -- page size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "path", "params"),
    [
        ("applications", "/applications", {"limit": 201}),
        ("applications", "/procedures", {"limit": 201}),
        ("payments", "/payments", {"from": "2026-11-01", "to": "2026-11-30", "limit": 1001}),
        ("payments", "/revenue", {"from": "2025-01-01", "to": "2026-11-30"}),
        ("payments", "/settlements", {"from": "2025-01-01", "to": "2026-11-30"}),
        ("notifications", "/notifications", {"limit": 501}),
        ("notifications", "/notifications/failed", {"limit": 501}),
        ("notifications", "/notifications/pending", {"offset": 1_000_001}),
    ],
)
async def test_every_list_refuses_a_page_past_its_cap(
    start_service: Any,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    path: str,
    params: dict[str, Any],
) -> None:
    city_env(monkeypatch)
    http = (await start_service(service)).http
    resp = await http.get(path, params=params, headers=STAFF)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


# -- rate limits ----------------------------------------------------------------------------


async def until_served(http: Any, path: str, headers: dict[str, str], within_s: float) -> float:
    started = time.monotonic()
    while (await http.get(path, headers=headers)).status_code == 429:
        assert time.monotonic() - started < within_s, "still limited"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_an_applicant_past_their_rate_is_429_with_retry_after_then_served_again(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(monkeypatch, APPLICATIONS_RATE_LIMIT_APPLICANT="5/second")
    http = (await start_service("applications")).http
    me = applicant()
    codes = [(await http.get("/applications", headers=me)).status_code for _ in range(5)]
    assert codes == [200] * 5
    limited = await http.get("/applications", headers=me)
    assert limited.status_code == 429
    assert "too many requests" in limited.json()["detail"]
    # A 5/second limit's sliding window ends within two seconds, and a wait is never 0 s:
    # a Retry-After computed from another window (a minute's) or rounded to 0 fails this.
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    # Per caller: another applicant and staff are not held back by this one.
    assert (await http.get("/applications", headers=applicant())).status_code == 200
    assert (await http.get("/applications", headers=STAFF)).status_code == 200
    await asyncio.sleep(int(limited.headers["retry-after"]))
    await until_served(http, "/applications", me, within_s=2.5)


async def test_the_public_is_limited_per_client_ip_and_bad_credentials_count_too(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(monkeypatch, APPLICATIONS_RATE_LIMIT_ANONYMOUS="3/second")
    http = (await start_service("applications")).http
    wrong = {"Authorization": "Bearer guessed-staff-token-0001"}
    assert (await http.get("/procedures")).status_code == 200
    assert (await http.get("/applications", headers=wrong)).status_code == 401
    assert (await http.get("/applications", headers=wrong)).status_code == 401
    guessing = await http.get("/applications", headers=wrong)
    assert guessing.status_code == 429
    assert "retry-after" in guessing.headers
    assert (await http.get("/procedures")).status_code == 429
    await until_served(http, "/procedures", {}, within_s=3.5)


async def test_rate_limits_can_be_switched_off(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(
        monkeypatch,
        APPLICATIONS_RATE_LIMIT_APPLICANT="1/minute",
        APPLICATIONS_RATE_LIMITS="false",
    )
    http = (await start_service("applications")).http
    me = applicant(uuid.uuid4())
    codes = {(await http.get("/applications", headers=me)).status_code for _ in range(5)}
    assert codes == {200}
