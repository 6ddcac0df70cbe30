"""Reporting's operations routes (/metrics, /projection/lag) take an operator's credential."""

from __future__ import annotations

from typing import Any

import pytest

OPERATOR_TOKEN = "reporting-operator-token-01"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@pytest.fixture
def start_service(start_service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's ``start_service``, with clients that send an operator's credential (the
    KPIs are public, so only the operations routes need it)."""
    monkeypatch.setenv("REPORTING_STAFF_TOKENS", f"ops01={OPERATOR_TOKEN}")

    async def start(name: str, **overrides: Any) -> Any:
        running = await start_service(name, **overrides)
        if name == "reporting":
            running.http.headers.update(OPERATOR)
        return running

    return start
