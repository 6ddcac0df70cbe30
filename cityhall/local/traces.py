"""`cityhall up --traces`: a local OTLP trace store with a web UI, and the services export to it.

The store is Arize Phoenix (PyPI ``arize-phoenix``, in the ``local`` extra), run as a sidecar:
its own server, with an OTLP/HTTP receiver at ``/v1/traces``, its web UI and a REST API on one
port, and its data (SQLite) under ``<home>/traces``. Why Phoenix, what it costs and why it is
not on by default: docs/operations.md ("Traces").

Each service is given ``OTEL_EXPORTER_OTLP_ENDPOINT`` (it then records and exports its spans,
services/runtime/telemetry.py) and the Phoenix project its spans belong to. The store's
address is kept in ``<home>/traces/url`` for `cityhall trace`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cityhall.embedded import free_port
from cityhall.files import write_private
from cityhall.local import LocalExtras, Sidecar
from cityhall.local.notifications import bindable

DEFAULT_UI_PORT = 6006
PROJECT = "cityhall"
"""The Phoenix project of every service's spans (resource attribute
``openinference.project.name``), so that one request is one trace in one project."""
READY_TIMEOUT_S = 240.0
"""Phoenix imports a great deal before it listens: 20 to 100 s on a busy 2-core machine."""


def traces_dir(home: Path) -> Path:
    return home / "traces"


def url_file(home: Path) -> Path:
    return traces_dir(home) / "url"


def ui_port() -> int:
    """CITYHALL_TRACES_PORT; else 6006 when free, except for a stack on its own ports
    (CITYHALL_PORT_BASE, as tests run them), which takes any free port."""
    if wanted := os.environ.get("CITYHALL_TRACES_PORT"):
        return int(wanted)
    if os.environ.get("CITYHALL_PORT_BASE"):
        return free_port()
    return DEFAULT_UI_PORT if bindable(DEFAULT_UI_PORT) else free_port()


def store_env(home: Path, port: int) -> dict[str, str]:
    """Phoenix's settings: loopback only, its data here, nothing fetched from outside (it would
    otherwise try to download a sandbox and reach documentation servers at start-up)."""
    return {
        "PHOENIX_WORKING_DIR": str(traces_dir(home)),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),  # always opened; the services use OTLP/HTTP
        "PHOENIX_PROJECT_NAME": PROJECT,
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    }


def prepare(home: Path) -> LocalExtras:
    port = ui_port()
    url = f"http://127.0.0.1:{port}"
    traces_dir(home).mkdir(parents=True, exist_ok=True)
    write_private(url_file(home), url + "\n")
    store = Sidecar(
        name="trace-store",
        argv=[sys.executable, "-m", "phoenix.server.main", "serve"],
        env=store_env(home, port),
        ready_port=port,
        ready_timeout_s=READY_TIMEOUT_S,
    )
    return LocalExtras(
        shared_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": url,
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
        },
        sidecars=[store],
        urls={"traces (Phoenix)": f"{url}  ·  `cityhall trace <id>`"},
    )
