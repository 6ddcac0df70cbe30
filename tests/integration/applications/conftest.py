"""The applications service in-process on real NATS and PostgreSQL, with a staff credential."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tokens import ENV

STAFF_TOKEN = "counter-staff-token-0001"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}


@pytest.fixture
async def applications(start_service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", f"counter01={STAFF_TOKEN}")
    monkeypatch.setenv(*ENV)  # applicants sign in with tests.tokens.applicant()
    return await start_service("applications")
