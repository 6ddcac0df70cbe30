"""`cityhall up` gives the applications service a local staff credential, kept in the home."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cityhall.local.applications import prepare
from services.runtime.auth import load_staff_credentials
from services.runtime.settings import SettingsError


def test_the_local_staff_token_is_made_once_private_and_accepted_by_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = prepare(tmp_path)
    again = prepare(tmp_path)
    assert first.env == again.env
    token_file = tmp_path / "applications" / "staff.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", first.env["APPLICATIONS_STAFF_TOKENS"])
    tokens = load_staff_credentials("applications").staff_tokens
    assert tokens["local-staff"].get_secret_value() == token_file.read_text().strip()


def test_a_malformed_staff_token_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", "counter01=short")
    with pytest.raises(SettingsError, match="16\\+ characters"):
        load_staff_credentials("applications")
