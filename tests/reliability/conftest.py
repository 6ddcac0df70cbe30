"""Fixtures for the reliability scenarios: the e2e suite's process runner."""

from tests.e2e.conftest import processes  # noqa: F401  (a fixture, used by name)
