"""Reporting's own settings are read at start-up: a bad value stops the service, naming the
field, instead of failing the first request that needs it."""

from __future__ import annotations

from typing import Any

import pytest

from services.runtime.settings import SettingsError


async def test_a_bad_answer_cache_size_stops_the_start(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPORTING_ANSWER_CACHE_MB", "-5")
    with pytest.raises(SettingsError, match=r"REPORTING_ANSWER_CACHE_MB: .* \(got '-5'\)"):
        await start_service("reporting")


async def test_the_service_starts_once_the_value_is_right(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPORTING_ANSWER_CACHE_MB", "8")
    reporting = await start_service("reporting")
    assert (await reporting.http.get("/healthz")).status_code == 200
