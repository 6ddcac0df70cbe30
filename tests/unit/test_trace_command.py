"""`cityhall trace`: the trace store's answers made a span tree; `up --traces`' set-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cityhall.cli import app
from cityhall.commands.traces import SpanView, TraceStore, tree_lines
from cityhall.local import traces

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(
    span_id: str, parent: str | None, name: str, start_ms: int, **attrs: str
) -> dict[str, Any]:
    """One span as Phoenix's REST API gives it (attributes by dotted name)."""
    return {
        "name": name,
        "context": {"trace_id": TRACE, "span_id": span_id},
        "parent_id": parent,
        "start_time": f"2026-12-07T10:00:00.{start_ms:03d}+00:00",
        "end_time": f"2026-12-07T10:00:00.{start_ms + 5:03d}+00:00",
        "status_code": attrs.pop("status", "UNSET"),
        "attributes": {"cityhall.service": attrs.pop("service"), **attrs},
    }


SPANS = [
    span("b", "a", "applications.application.submitted.v1 publish", 10, service="applications"),
    span(
        "a",
        None,
        "POST /applications",
        0,
        service="applications",
        **{"cityhall.application_id": "5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f"},
    ),
    span("d", "c", "smtp send", 40, service="notifications", status="ERROR"),
    span(
        "c",
        "b",
        "cityhall.applications.application.submitted.v1 process",
        20,
        service="notifications",
    ),
]


def test_the_tree_indents_children_under_their_parent_in_start_order() -> None:
    lines = tree_lines([SpanView.of(s) for s in SPANS])
    assert lines == [
        "applications: POST /applications  5.0 ms",
        "  applications: applications.application.submitted.v1 publish  5.0 ms",
        "    notifications: cityhall.applications.application.submitted.v1 process  5.0 ms",
        "      notifications: smtp send  5.0 ms  [ERROR]",
    ]


def phoenix(spans: list[dict[str, Any]]) -> httpx.MockTransport:
    """Phoenix's span search: by trace id, or by one ``attribute=key:"value"``."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/projects/cityhall/spans"
        found = spans
        if trace_ids := request.url.params.get_list("trace_id"):
            found = [s for s in found if s["context"]["trace_id"] in trace_ids]
        if attribute := request.url.params.get("attribute"):
            key, _, value = attribute.partition(":")
            found = [s for s in found if s["attributes"].get(key) == json.loads(value)]
        return httpx.Response(200, json={"data": found, "next_cursor": None})

    return httpx.MockTransport(handle)


def test_a_trace_is_found_by_the_application_it_names_or_by_its_own_id() -> None:
    with httpx.Client(transport=phoenix(SPANS), base_url="http://store") as client:
        store = TraceStore(client)
        assert store.trace_ids_of("5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f") == [TRACE]
        assert store.trace_ids_of(TRACE) == [TRACE]
        assert store.trace_ids_of("00000000-0000-0000-0000-000000000000") == []
        assert len(store.trace(TRACE)) == 4


def test_the_command_says_so_when_no_trace_store_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYHALL_HOME", str(tmp_path))
    monkeypatch.setenv("CITYHALL_TRACES_URL", "http://127.0.0.1:9")  # discard: nobody listens
    result = CliRunner().invoke(app, ["trace", TRACE])
    assert result.exit_code == 1
    assert "cityhall up --traces" in result.output
    assert CliRunner().invoke(app, ["trace", "not-an-id"]).exit_code == 2


def test_up_with_traces_runs_phoenix_and_points_every_service_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYHALL_TRACES_PORT", "16006")
    extras = traces.prepare(tmp_path)
    [store] = extras.sidecars
    assert store.argv[-2:] == ["phoenix.server.main", "serve"]
    assert store.ready_port == 16006
    assert store.env["PHOENIX_WORKING_DIR"] == str(tmp_path / "traces")
    assert store.env["PHOENIX_ALLOW_EXTERNAL_RESOURCES"] == "false"
    assert extras.shared_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:16006"
    assert traces.url_file(tmp_path).read_text().strip() == "http://127.0.0.1:16006"
