"""OpenTelemetry traces and structured logs that carry the trace id.

Spans come from FastAPI (HTTP), asyncpg (SQL, only when spans are recorded), the outbox relay
(publish) and the runtime's consumer (one ``process`` span per event, child of the producer's
context carried in the ``traceparent`` header). Spans are exported over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Otherwise nothing would read them, so they are not
recorded at all (sampler ``always_off``: a span is then a bare context, which still gives every
log line and every outgoing ``traceparent`` a trace id, at a fraction of the cost of recording
spans nobody exports; docs/benchmarks.md). ``OTEL_TRACES_SAMPLER``, when
set, decides instead, as the OpenTelemetry SDK documents.

Exported spans carry the service's name as the attribute ``cityhall.service`` too (a trace
store that keeps span attributes but not the resource's, as Phoenix does, can still tell whose
span it is), and the spans that act on an application or a payment name it
(``cityhall.application_id``, ``cityhall.payment_id``: ``tag_current_span``), which is how
`cityhall trace <id>` finds a trace.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes
from pythonjsonlogger.json import JsonFormatter

_provider: TracerProvider | None = None

SERVICE_ATTRIBUTE = "cityhall.service"


class _ServiceName(SpanProcessor):
    """Adds ``cityhall.service`` to every span as it starts."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        span.set_attribute(SERVICE_ATTRIBUTE, self.service_name)


def setup_tracing(
    service_name: str,
    otlp_endpoint: str | None,
    exporter: SpanExporter | None = None,
    *,
    sampler_from_env: bool = False,
) -> TracerProvider:
    """Install the global tracer provider once per process. ``sampler_from_env``: the
    operator set ``OTEL_TRACES_SAMPLER``, which the SDK then applies."""
    global _provider
    if _provider is not None:
        return _provider
    sampler = choose_sampler(exporter is not None or bool(otlp_endpoint), sampler_from_env)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=sampler
    )
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        # The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint + /v1/traces, headers).
        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(_ServiceName(service_name))
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if sampler is not ALWAYS_OFF:
        # SQL spans only where spans are recorded: the wrapper costs CPU even when unrecorded.
        _instrument_asyncpg()
    _provider = provider
    return provider


class NoLooseQueries(Sampler):
    """Records every root span except an SQL query's: a query outside any request or event
    is a background loop's poll (the outbox relay, the sweeps), many a second, each of which
    would otherwise be a trace of its own in the store, burying the requests' traces."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT and any(k.startswith("db.") for k in attributes or {}):
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "NoLooseQueries"


def choose_sampler(exporting: bool, sampler_from_env: bool) -> Sampler | None:
    """When spans are exported: the parent's decision, and for a root span ``NoLooseQueries``;
    when the operator chose (OTEL_TRACES_SAMPLER): None, the SDK applies it; when nobody
    exports: record nothing."""
    if sampler_from_env:
        return None
    return ParentBased(root=NoLooseQueries()) if exporting else ALWAYS_OFF


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


def _instrument_asyncpg() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def tag_current_span(**ids: uuid.UUID | str | None) -> None:
    """Name what the current span acts on: ``tag_current_span(application_id=...)`` sets
    ``cityhall.application_id`` (when the span is recorded; ``None`` values are skipped)."""
    span = trace.get_current_span()
    if span.is_recording():
        for name, value in ids.items():
            if value is not None:
                span.set_attribute(f"cityhall.{name}", str(value))


def current_trace_headers() -> dict[str, str]:
    """W3C trace context of the current span, to store with an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, str]) -> Context:
    return propagate.extract(dict(headers))


class _TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Structured (JSON) logs on stderr; each record carries the current trace id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={
                    "asctime": "time",
                    "levelname": "level",
                    "name": "logger",
                },
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-message framework logs cost consumer throughput (docs/operations.md); keep warnings.
    for noisy in ("faststream", "faststream.access", "uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
