"""`cityhall up --traces`: one online application with a fee, paid through the provider
simulator, is one trace in the local trace store (Phoenix), from the citizen's HTTP request
through the outbox, NATS, payments, the provider's webhook, applications and notifications to
the SMTP hand-off; `cityhall trace` prints it.

Embedded servers (NATS_URL and DATABASE_URL are left out), as `make run` starts them. This is
also the test of the fee paid through the provider simulator sidecar (one stack start for
both, as CI time is short).
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cityhall.commands.traces import SpanView, TraceStore, store_url, tree_lines
from services.runtime.auth import mint_applicant_token
from tests.e2e.helpers import Processes, clean_env, wait_until
from tests.e2e.local_stack import Run, start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

STAFF = {"authorization": "Bearer tok-e2e-000000001"}


async def apply_online_with_a_fee(run: Run, http: httpx.AsyncClient) -> tuple[str, str]:
    """A signed-in citizen with an e-mail address applies for a 住民票 (a fee of 300 yen);
    the application's id and the citizen's token."""
    applicant = uuid.uuid4()
    secret = (run.home / "applicant-jwt.secret").read_text().strip()
    token = mint_applicant_token(applicant, secret)
    signed_in = {"Authorization": f"Bearer {token}"}
    put = await http.put(
        f"{run.urls['notifications']}/contacts/{applicant}",
        json={"email": "taro.koriyama@example.jp", "language": "ja"},
        headers=signed_in,
    )
    assert put.status_code == 200, put.text
    resp = await http.post(
        f"{run.urls['applications']}/applications",
        json={"procedure_code": "JUMINHYO", "form": {"copies": 1}},
        headers=signed_in,
    )
    assert resp.status_code == 201, resp.text
    app = resp.json()
    assert app["status"] == "awaiting_payment", app  # online: the fee is asked for at once
    return app["id"], token


async def pay_through_the_simulator(
    run: Run, http: httpx.AsyncClient, application_id: str, provider_url: str
) -> dict[str, Any]:
    async def request() -> dict[str, Any] | None:
        response = await http.get(
            f"{run.urls['payments']}/payment-requests/{application_id}", headers=STAFF
        )
        return response.json() if response.status_code == 200 else None

    pending = await wait_until(request, timeout=20, message=run.logs)
    assert pending["pay_url"].startswith(f"{provider_url}/checkout?reference=PR-")
    checkout = await http.get(pending["pay_url"])
    assert pending["reference"] in checkout.text
    paid = await http.post(
        f"{provider_url}/pay",
        json={"reference": pending["reference"], "amount_yen": pending["amount_yen"]},
    )
    assert paid.json()["status_code"] == 200, paid.text

    async def settled() -> dict[str, Any] | None:
        body = await request()
        return body if body and body["status"] == "paid" else None

    return await wait_until(settled, timeout=20, message=run.logs)


def one_of(spans: list[SpanView], service: str, name: str) -> SpanView:
    """The first (by start) of this service's spans whose name matches."""
    found = [s for s in spans if s.service == service and re.fullmatch(name, s.name)]
    assert found, f"no {service} span {name!r} in:\n" + "\n".join(tree_lines(spans))
    return min(found, key=lambda s: s.start)


def ancestors(span: SpanView, spans: list[SpanView]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain: list[str] = []
    parent = span.parent_id
    while parent and parent in by_id and parent not in chain:
        chain.append(parent)
        parent = by_id[parent].parent_id
    return chain


def cityhall_trace(home: Path, wanted: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cityhall", "trace", wanted],
        env=clean_env(CITYHALL_HOME=str(home)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_an_online_application_with_a_fee_is_one_trace_to_the_smtp_hand_off(
    processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_STAFF_TOKENS", "e2e=tok-e2e-000000001")
    home = tmp_path / "home"
    async with httpx.AsyncClient(timeout=5.0) as http:
        run = await start_stack(
            processes, home, http, "--traces", ready_timeout_s=300, OTEL_BSP_SCHEDULE_DELAY="200"
        )

        async def printed() -> re.Match[str] | None:
            output = run.up.output(tail=200)
            if "traces (Phoenix)" not in output:
                return None
            return re.search(r"payment provider\s*│\s*(http://[0-9.:]+)", output)

        provider_at = await wait_until(printed, timeout=10, message=run.logs)
        application_id, _ = await apply_online_with_a_fee(run, http)
        done = await pay_through_the_simulator(run, http, application_id, provider_at.group(1))
        payment = await http.get(
            f"{run.urls['payments']}/payments/{done['payment_id']}", headers=STAFF
        )
        assert payment.json()["application_id"] == application_id
        assert payment.json()["channel"] == "online"

        with httpx.Client(base_url=store_url(home), timeout=5.0) as client:
            store = TraceStore(client)

            async def the_trace() -> list[SpanView] | None:
                """The one trace naming the application, once the SMTP hand-off of the payment
                confirmation has reached the store."""
                trace_ids = store.trace_ids_of(application_id)
                assert len(trace_ids) <= 1, trace_ids
                spans = store.trace(trace_ids[0]) if trace_ids else []
                smtp = [s for s in spans if s.service == "notifications" and s.name == "smtp send"]
                return spans if len(smtp) >= 3 else None  # received, fee due, fee paid

            spans = await wait_until(the_trace, timeout=60, interval=1.0, message=run.logs)
            assert store.trace_ids_of(done["payment_id"]) == [spans[0].trace_id]
        assert_one_tree(spans)

        # -- `cityhall trace` prints it, by the application's or the payment's id --------------
        trace_id = spans[0].trace_id
        printed = cityhall_trace(home, application_id)
        assert printed.count("trace ") == 1, printed
        assert printed.startswith(f"trace {trace_id}"), printed
        for line in (
            "\n    applications: POST /applications",
            "payments: provider notice (webhook)",
            "notifications: smtp send",
        ):
            assert line in printed, printed
        assert cityhall_trace(home, done["payment_id"]).startswith(f"trace {trace_id}")
        await stop_stack(run)


def assert_one_tree(spans: list[SpanView]) -> None:
    """Every span descends from the citizen's request, through each step of the flow."""
    request = one_of(spans, "applications", "POST /applications")
    assert request.parent_id is None, "the trace starts at the citizen's HTTP request"
    relay = one_of(spans, "applications", r"applications\.application\..* publish")
    fee_asked = one_of(spans, "payments", r".*\.application\.payment_requested\.v1 process")
    notice = one_of(spans, "payments", r"provider notice \(webhook\)")
    captured = one_of(spans, "payments", r"payments\.payment\.captured\.v1 publish")
    paid = one_of(spans, "applications", r".*\.payments\.payment\.captured\.v1 process")
    told = one_of(spans, "notifications", r".*\.payments\.payment\.captured\.v1 process")
    steps = [
        (request, relay),  # the outbox row, published by the relay
        (relay, fee_asked),  # payments opens the payment request
        (fee_asked, notice),  # the provider's webhook continues the request's trace
        (notice, captured),
        (captured, paid),  # applications: the application is paid
        (captured, told),  # notifications: the fee-paid mail
    ]
    for parent, child in steps:
        assert parent.span_id in ancestors(child, spans), "\n".join(tree_lines(spans))
    handed_off = [s for s in spans if s.name == "smtp send" and s.parent_id == told.span_id]
    assert handed_off, "the payment confirmation's SMTP hand-off is in the trace"
    for span in spans:
        assert span is request or request.span_id in ancestors(span, spans), span
    assert all(s.status != "ERROR" for s in spans), spans
