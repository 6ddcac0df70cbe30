"""`cityhall up` on its own: embedded nats-server and PostgreSQL, all stopped by Ctrl-C,
data kept for the next run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import Processes, wait_until
from tests.e2e.local_stack import applications_by_channel, start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_up_runs_embedded_servers_and_keeps_data(
    processes: Processes, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    async with httpx.AsyncClient(timeout=5.0) as http:
        # -- first run: initdb, bootstrap, one application counted ---------------------------
        first = await start_stack(processes, home, http)
        token = (home / "applications" / "staff.token").read_text().strip()
        resp = await http.post(
            f"{first.urls['applications']}/applications",
            json={"procedure_code": "JUMINHYO", "channel": "counter"},
            headers={"Authorization": f"Bearer {token}"},  # counter entries are staff's
        )
        assert resp.status_code == 201, resp.text

        async def counted() -> dict[str, int] | None:
            body = await applications_by_channel(http, first)
            return body if body["total"] == 1 else None

        body = await wait_until(counted, timeout=20, message=first.logs)
        assert body["counter"] == 1
        await stop_stack(first)

        # -- second run on the same home: the count is still there ---------------------------
        second = await start_stack(processes, home, http)
        body = await applications_by_channel(http, second)
        assert body["total"] == 1, body
        assert body["counter"] == 1, body
        await stop_stack(second)
