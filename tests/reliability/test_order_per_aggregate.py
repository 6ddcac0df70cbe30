"""Order per aggregate: streams have no order between them and a redelivery can overtake, so a
certificate may reach reporting before the approval it follows, or before the submission
itself. Every order of one application's events gives the same figures as the order they
happened in.

(Payments' side of this, a refund or void before its capture, is in
``tests/integration/payments/test_terminal_ingestion.py`` and
``tests/integration/reporting/test_batched_projections.py``.)
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from nats.js import JetStreamContext

from contracts.applications import ApplicationApprovedV1, CertificateIssuedV1
from tests.integration.helpers import publish_envelope, wait_for
from tests.integration.reporting.events import step, submitted_with_id


async def test_every_order_of_submission_approval_and_certificate_gives_the_same_figures(
    start_service: Any, js: JetStreamContext, namespace: str
) -> None:
    reporting = await start_service("reporting")
    orders = list(itertools.permutations(range(3)))  # 6 orders, one application each
    for n, order in enumerate(orders):
        app_id = uuid.uuid4()
        events = [
            submitted_with_id(app_id, "online", "JUMINHYO", "2026-10-01 09:00"),
            step(ApplicationApprovedV1, app_id, "JUMINHYO", "2026-10-01 10:00"),
            step(
                CertificateIssuedV1,
                app_id,
                "JUMINHYO",
                "2026-10-01 12:00",
                certificate_number=f"072036-2026-{n:07d}",
            ),
        ]
        for i in order:
            await publish_envelope(js, namespace, events[i])

    async def all_in() -> Any:
        body = (await reporting.http.get("/kpi/certificate-turnaround")).json()
        return body if body["total"]["certificates_issued"] == len(orders) else None

    body = await wait_for(all_in)
    total = body["total"]
    assert total["submitted"] == len(orders)
    assert total["completed"] == len(orders)  # none counted twice, none left "approved"
    assert total["closed_without_completion"] == 0
    assert total["completion_rate"] == 1.0
    # 3 h from submission to certificate whatever came first (within the 2 % bins).
    assert abs(total["median_seconds"] - 3 * 3600) <= 0.02 * 3 * 3600
