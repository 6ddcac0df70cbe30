"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Starts processes for a test; whatever still runs afterwards is stopped (SIGINT, then
    SIGKILL), even when the test failed. Request it after ``db`` / ``js`` so the processes stop
    before their schemas and streams are removed."""
    procs = Processes(tmp_path / "out")
    try:
        yield procs
    finally:
        procs.stop_all()
