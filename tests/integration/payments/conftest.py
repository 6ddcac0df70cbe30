"""Fixtures for the payments integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.payments.helpers import assert_ledger_balances


@pytest.fixture
async def payments(start_service: Any) -> AsyncIterator[Any]:
    """The payments service on the real servers; its ledger must balance after the test."""
    service = await start_service("payments")
    yield service
    await assert_ledger_balances(service.pool)
