"""`cityhall up` on existing servers: HTTP in, event through JetStream, KPI out, one trace.

The stack runs as real processes (``python -m cityhall up`` and the four services it starts),
exports its spans over OTLP/HTTP to a receiver run by this test, and is stopped with SIGINT
like a developer's Ctrl-C.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.helpers import (
    OtlpReceiver,
    Processes,
    ReceivedSpan,
    alive,
    clean_env,
    free_port_base,
    is_ready,
    read_logs,
    service_ports,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVER = Span.SpanKind.SPAN_KIND_SERVER
PRODUCER = Span.SpanKind.SPAN_KIND_PRODUCER
CONSUMER = Span.SpanKind.SPAN_KIND_CONSUMER


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


async def test_stack_serves_the_first_flow_in_one_trace(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    otlp: OtlpReceiver,
    processes: Processes,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    base = free_port_base()
    urls = {name: f"http://127.0.0.1:{port}" for name, port in service_ports(base).items()}
    env = clean_env(
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        CITYHALL_NAMESPACE=namespace,
        CITYHALL_PORT_BASE=str(base),
        CITYHALL_HOME=str(home),
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    up = processes.cityhall("up", "up", env=env)

    def logs() -> str:
        return up.output() + "\n" + read_logs((home / "logs").glob("*.log"))

    async with httpx.AsyncClient(timeout=5.0) as http:
        # -- all four services ready ---------------------------------------------------------
        async def all_ready() -> bool:
            up.record_descendants()
            assert up.returncode is None, f"cityhall up exited ({up.returncode})\n{logs()}"
            return all(await asyncio.gather(*(is_ready(http, u) for u in urls.values())))

        await wait_until(all_ready, timeout=90, interval=0.25, message=logs)
        services = up.running_descendants("cityhall serve")
        assert len(services) == 4, up.cmdlines

        # -- two applications, counted by channel --------------------------------------------
        created = []
        # Mail entries are staff's: `up` made a local staff token under its home.
        token = (home / "applications" / "staff.token").read_text().strip()
        for channel in ("online", "mail"):
            resp = await http.post(
                f"{urls['applications']}/applications",
                json={"procedure_code": "JUMINHYO", "channel": channel},
                headers={"Authorization": f"Bearer {token}"} if channel == "mail" else {},
            )
            assert resp.status_code == 201, resp.text
            created.append(resp.json())

        async def counted() -> dict[str, object] | None:
            body = (await http.get(f"{urls['reporting']}/kpi/applications/by-channel")).json()
            return body if body["total"] == 2 else None

        kpi = await wait_until(counted, timeout=20, interval=0.1, message=logs)
        assert kpi["online"] == 1
        assert kpi["mail"] == 1
        assert kpi["counter"] == 0

    # -- one trace per request: POST (server) -> NATS publish (producer) -> process (consumer)
    def process_span(application_id: str) -> ReceivedSpan | None:
        return next(
            (
                s
                for s in otlp.snapshot()
                if s.service == "reporting"
                and s.scope == "cityhall.consumer"
                and s.kind == CONSUMER
                and s.attributes.get("cloudevents.event_subject") == application_id
            ),
            None,
        )

    def complete_flow(application_id: str) -> list[ReceivedSpan] | None:
        """The spans of the trace that processed this application, once all have arrived."""
        process = process_span(application_id)
        if process is None:
            return None
        in_trace = [s for s in otlp.snapshot() if s.trace_id == process.trace_id]
        if not any(s.kind == SERVER for s in in_trace) or not any(
            s.kind == PRODUCER for s in in_trace
        ):
            return None
        return in_trace

    async def all_flows() -> bool:
        return all(complete_flow(app["id"]) for app in created)

    await wait_until(all_flows, timeout=30, interval=0.2, message=lambda: otlp.dump())
    await asyncio.sleep(0.6)  # spans ended at the same time may come in the next export batch
    flows = [complete_flow(app["id"]) or [] for app in created]
    assert len({flow[0].trace_id for flow in flows}) == len(created), "one trace per request"
    for app, spans in zip(created, flows, strict=True):
        by_id = {s.span_id: s for s in spans}
        process = process_span(app["id"])
        assert process is not None
        servers = [s for s in spans if s.kind == SERVER]
        assert len(servers) == 1, otlp.dump(spans)
        server = servers[0]
        assert server.service == "applications", otlp.dump(spans)
        assert server.name == "POST /applications", otlp.dump(spans)
        assert server.parent_span_id == "", "the trace starts at the HTTP request"
        # reporting's process span is the child of applications' producer span (the context
        # FastStream put in the message's traceparent), itself the child of the POST's span.
        producer = by_id.get(process.parent_span_id)
        assert producer is not None, otlp.dump(spans)
        assert producer.service == "applications", otlp.dump(spans)
        assert producer.kind == PRODUCER, otlp.dump(spans)
        assert producer.parent_span_id == server.span_id, otlp.dump(spans)
        # Every producer span of the trace (FastStream's create and publish) descends from it.
        for span in spans:
            if span.kind == PRODUCER:
                assert server.span_id in _ancestors(span, by_id), otlp.dump(spans)
        assert process.attributes.get("messaging.operation") == "process"

    # -- Ctrl-C: everything stops, exit code 0 -----------------------------------------------
    up.record_descendants()
    started = time.monotonic()
    up.signal(signal.SIGINT)
    code = await up.wait(40)
    assert code == 0, logs()
    print(f"cityhall up stopped in {time.monotonic() - started:.1f}s", file=sys.stderr)
    left = {pid: p for pid, p in up.descendants.items() if alive(p)}
    assert not left, f"still running after `cityhall up` exited: {left}"


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    chain = []
    parent = span.parent_span_id
    while parent and parent not in chain:
        chain.append(parent)
        parent = by_id[parent].parent_span_id if parent in by_id else ""
    return chain
