"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Processes
from tests.security.scanner import AtRestScan


@pytest.fixture
def processes(tmp_path: Path, at_rest: AtRestScan) -> Iterator[Processes]:
    """Starts processes for a test; whatever still runs afterwards is stopped (SIGINT, then
    SIGKILL), even when the test failed. Request it after ``db`` / ``js`` so the processes stop
    before their schemas and streams are removed.

    The logs they leave below ``tmp_path`` (theirs, and `cityhall up`'s servers' and services')
    are then scanned for card numbers and My Numbers (the at-rest scan, tests/conftest.py)."""
    procs = Processes(tmp_path / "out")
    try:
        yield procs
    finally:
        procs.stop_all()
        at_rest.scan_log_files(tmp_path)
