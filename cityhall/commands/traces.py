"""`cityhall trace <application_id | payment_id | trace_id>`: a trace's span tree, in the terminal.

It asks the trace store that `cityhall up --traces` runs (Arize Phoenix, cityhall/local/traces.py)
through its REST API: an id of 32 hex digits is a trace id; a UUID is looked up as the span
attributes ``cityhall.application_id`` and ``cityhall.payment_id`` that the services set
(services/runtime/telemetry.py), and every trace naming it is printed, oldest first.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from cityhall.local.traces import DEFAULT_UI_PORT, PROJECT, url_file

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
LOOKED_UP = ("cityhall.application_id", "cityhall.payment_id")
PAGE = 1000


class StoreUnavailable(Exception):
    """No trace store answers at the address, or it answered with an error."""


@dataclass(frozen=True)
class SpanView:
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start: datetime
    end: datetime
    status: str

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000

    @classmethod
    def of(cls, raw: dict[str, Any]) -> SpanView:
        """A span of Phoenix's REST API (attributes by their dotted names)."""
        attributes = raw.get("attributes") or {}
        service = attributes.get("cityhall.service", "?")
        return cls(
            trace_id=raw["context"]["trace_id"],
            span_id=raw["context"]["span_id"],
            parent_id=raw.get("parent_id") or None,
            service=str(service),
            name=raw["name"],
            start=datetime.fromisoformat(raw["start_time"]),
            end=datetime.fromisoformat(raw["end_time"]),
            status=raw.get("status_code") or "UNSET",
        )


def store_url(home: Path) -> str:
    """CITYHALL_TRACES_URL; else where `cityhall up --traces` said it runs; else :6006."""
    if wanted := os.environ.get("CITYHALL_TRACES_URL"):
        return wanted.rstrip("/")
    path = url_file(home)
    if path.is_file():
        return path.read_text().strip().rstrip("/")
    return f"http://127.0.0.1:{DEFAULT_UI_PORT}"


class TraceStore:
    """The little of Phoenix's REST API (``/v1/projects/{project}/spans``) this needs."""

    def __init__(self, client: httpx.Client, project: str = PROJECT) -> None:
        self.client = client
        self.project = project

    def spans(self, **params: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {**params, "limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
            try:
                resp = self.client.get(f"/v1/projects/{self.project}/spans", params=query)
            except httpx.HTTPError as exc:
                raise StoreUnavailable(str(exc)) from exc
            if resp.status_code == 404:
                return found  # no span was ever exported to the project
            if resp.status_code != 200:
                raise StoreUnavailable(f"HTTP {resp.status_code}: {resp.text[:200]}")
            body = resp.json()
            found += body.get("data", [])
            cursor = body.get("next_cursor")
            if not cursor:
                return found

    def trace_ids_of(self, wanted: str) -> list[str]:
        """The traces with a span naming ``wanted`` (a trace id, or a cityhall.* id)."""
        if TRACE_ID.match(wanted):
            return [wanted] if self.spans(trace_id=wanted) else []
        ids: dict[str, datetime] = {}
        for attribute in LOOKED_UP:
            for raw in self.spans(attribute=f"{attribute}:{json.dumps(wanted)}"):
                span = SpanView.of(raw)
                ids[span.trace_id] = min(span.start, ids.get(span.trace_id, span.start))
        return sorted(ids, key=ids.__getitem__)

    def trace(self, trace_id: str) -> list[SpanView]:
        return [SpanView.of(raw) for raw in self.spans(trace_id=trace_id)]


def tree_lines(spans: list[SpanView]) -> list[str]:
    """One line per span, children indented under their parent, siblings by start time; a
    span whose parent is not in the trace (not exported, or still on its way) is a root."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanView]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start):
            status = "" if span.status in ("OK", "UNSET") else f"  [{span.status}]"
            lines.append(
                f"{'  ' * depth}{span.service}: {span.name}  {span.duration_ms:.1f} ms{status}"
            )
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return lines


def trace_command(
    wanted: Annotated[str, typer.Argument(help="An application id, a payment id or a trace id.")],
) -> None:
    """Print the span tree of the trace(s) of an application, a payment or a trace id, from
    the trace store of `cityhall up --traces` (service: span, duration, status)."""
    home = Path(os.environ.get("CITYHALL_HOME") or ".cityhall")
    url = store_url(home)
    wanted = wanted.strip().lower()
    if not TRACE_ID.match(wanted):
        try:
            wanted = str(uuid.UUID(wanted))
        except ValueError:
            typer.echo(f"{wanted!r} is neither a UUID nor a trace id (32 hex digits)", err=True)
            raise typer.Exit(2) from None
    with httpx.Client(base_url=url, timeout=10.0) as client:
        store = TraceStore(client)
        try:
            trace_ids = store.trace_ids_of(wanted)
            traces = [store.trace(t) for t in trace_ids]
        except StoreUnavailable as exc:
            typer.echo(
                f"no trace store answers at {url} ({exc}); start the stack with "
                "`cityhall up --traces` (or set CITYHALL_TRACES_URL)",
                err=True,
            )
            raise typer.Exit(1) from None
    if not traces:
        typer.echo(f"no trace names {wanted} in {url} (yet: spans arrive within seconds)", err=True)
        raise typer.Exit(1)
    for trace_id, spans in zip(trace_ids, traces, strict=True):
        took = (max(s.end for s in spans) - min(s.start for s in spans)).total_seconds()
        typer.echo(f"trace {trace_id}  ({len(spans)} spans, {took:.2f} s)  {url}")
        for line in tree_lines(spans):
            typer.echo(f"  {line}")


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_command)
