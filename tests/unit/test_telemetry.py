"""Logs are JSON lines that carry the trace id of the span they were written in."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from services.runtime.telemetry import choose_sampler, setup_logging


def test_a_log_line_inside_a_span_carries_its_trace_id(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("applications", "INFO", "json")
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("request") as span:
            logging.getLogger("cityhall.test").info("application submitted", extra={"n": 1})
        logging.getLogger("cityhall.test").info("outside")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    inside, outside = lines
    assert inside["message"] == "application submitted"
    assert inside["service"] == "applications"
    assert inside["level"] == "INFO"
    assert inside["n"] == 1
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside


def test_spans_nobody_exports_are_not_recorded_but_still_give_logs_a_trace_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("payments", "INFO", "json")
        sampler = choose_sampler(exporting=False, sampler_from_env=False)
        assert sampler is ALWAYS_OFF
        assert choose_sampler(exporting=True, sampler_from_env=False) is not None
        assert choose_sampler(exporting=False, sampler_from_env=True) is None
        tracer = TracerProvider(sampler=sampler).get_tracer("test")
        with tracer.start_as_current_span("batch") as span:
            logging.getLogger("cityhall.test").info("posted")
        [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert not span.is_recording()
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["trace_id"] != "0" * 32


def test_exported_traces_leave_out_queries_outside_any_request_or_event() -> None:
    """A background loop's poll is no trace of its own; a query inside a request is kept."""
    sampler = choose_sampler(exporting=True, sampler_from_env=False)
    tracer = TracerProvider(sampler=sampler).get_tracer("test")
    query = {"db.system": "postgresql", "db.statement": "SELECT 1"}
    loose = tracer.start_span("SELECT", kind=SpanKind.CLIENT, attributes=query)
    with tracer.start_as_current_span("POST /applications", kind=SpanKind.SERVER) as request:
        inside = tracer.start_span("SELECT", kind=SpanKind.CLIENT, attributes=query)
        assert request.is_recording()
        assert inside.is_recording()
    assert not loose.is_recording()
