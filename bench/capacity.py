"""Capacity estimate: how many replicas of what for N municipalities, from `make bench`.

    .venv/bin/python bench/capacity.py [bench/results/latest.json]

Reads the figures of the last `make bench` (per-event CPU of each service and server, the
applications process's CPU per POST, bytes kept per capture) and scales them by population
with the load model below. Every assumption is a named constant here and in docs/deploy.md.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# -- the load model -----------------------------------------------------------------------------
KORIYAMA_PEOPLE = 320_000
KORIYAMA_APPLICATIONS_PER_YEAR = 1_000_000
"""The performance issue's "year of city data" (all channels, once every procedure is online)."""
KORIYAMA_PAYMENTS_PER_YEAR = 2_000_000
EVENTS_PER_APPLICATION = 5
"""Submitted, payment requested, paid, in review, approved or rejected (certificates add one):
what an application puts on the bus, each consumed by payments, notifications and reporting."""
BUSY_SECONDS_PER_YEAR = 250 * 9 * 3600
"""Counters and facilities are busy about 250 days a year, 9 hours a day."""
PEAK_FACTOR = 6.0
"""3x within a day (opening, noon) times 2x in the season of moves (March-April)."""
TARGET_UTILISATION = 0.6
"""Cores are planned at 60 % busy at peak, leaving room for a node to fail."""
MIN_REPLICAS = 3
"""Spread over three nodes (PodDisruptionBudget: one may be down)."""

POPULATIONS: tuple[tuple[str, int], ...] = (
    ("Koriyama (1 city)", KORIYAMA_PEOPLE),
    ("Fukushima Prefecture (59 municipalities)", 1_750_000),
    ("Tohoku (227 municipalities)", 8_400_000),
    ("all of Japan (~1,700 municipalities)", 124_000_000),
)


@dataclass(frozen=True)
class Costs:
    """CPU microseconds per event (or per POST) and bytes per capture, as measured."""

    payments_us: float
    reporting_us: float
    nats_us: float
    postgres_us: float
    post_us: float | None
    payments_db_b: float
    reporting_db_b: float
    stream_b: float


def figures(report: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for section in report.get("sections", {}).values():
        for f in section.get("figures", []):
            if isinstance(f.get("value"), int | float):
                out[f["name"]] = float(f["value"])
    return out


def costs(report: dict[str, Any]) -> Costs:
    f = figures(report)
    return Costs(
        payments_us=f["e2e.payments_cpu_us_per_event"]
        + f.get("e2e.payments_relay_cpu_us_per_event", 0.0),  # its relay's process, if apart
        reporting_us=f["e2e.reporting_cpu_us_per_event"],
        nats_us=f.get("e2e.nats_cpu_us_per_event", 0.0),
        postgres_us=f.get("e2e.postgres_cpu_us_per_event", 0.0),
        post_us=f.get("commands.applications_cpu_us_per_post"),
        payments_db_b=f.get("storage.payments_db_bytes_per_capture", 0.0),
        reporting_db_b=f.get("storage.reporting_db_bytes_per_capture", 0.0),
        stream_b=f.get("storage.terminals_stream_bytes_per_capture", 0.0)
        + f.get("storage.payments_stream_bytes_per_capture", 0.0),
    )


def replicas(cores: float) -> int:
    return max(MIN_REPLICAS, math.ceil(cores / TARGET_UTILISATION))


def estimate(c: Costs) -> list[dict[str, Any]]:
    rows = []
    for label, people in POPULATIONS:
        scale = people / KORIYAMA_PEOPLE
        payments_per_s = KORIYAMA_PAYMENTS_PER_YEAR * scale / BUSY_SECONDS_PER_YEAR * PEAK_FACTOR
        posts_per_s = KORIYAMA_APPLICATIONS_PER_YEAR * scale / BUSY_SECONDS_PER_YEAR * PEAK_FACTOR
        app_events_per_s = posts_per_s * EVENTS_PER_APPLICATION
        # Application events cost their consumers about what a capture costs reporting (a
        # batched projection or a notification row): a conservative stand-in until measured.
        bus_per_s = payments_per_s + app_events_per_s
        cores = {
            "payments": payments_per_s * c.payments_us / 1e6,
            "reporting": bus_per_s * c.reporting_us / 1e6,
            "applications": posts_per_s * (c.post_us or 0.0) / 1e6,
            "nats": bus_per_s * c.nats_us / 1e6,
            "postgres": bus_per_s * c.postgres_us / 1e6,
        }
        yearly_bytes = (
            KORIYAMA_PAYMENTS_PER_YEAR * scale * (c.payments_db_b + c.reporting_db_b + c.stream_b)
        )
        rows.append(
            {
                "population": label,
                "people": people,
                "peak_captures_per_s": round(payments_per_s),
                "peak_posts_per_s": round(posts_per_s),
                "peak_bus_events_per_s": round(bus_per_s),
                "cores": {k: round(v, 3) for k, v in cores.items()},
                "replicas": {
                    k: replicas(v) for k, v in cores.items() if k not in ("nats", "postgres")
                },
                "payments_storage_gb_per_year": round(yearly_bytes / 1e9, 1),
            }
        )
    return rows


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "latest.json"
    report = json.loads(path.read_text())
    c = costs(report)
    print(f"per-event costs from {path}: {c}")
    for row in estimate(c):
        cores = ", ".join(f"{k} {v:.2f}" for k, v in row["cores"].items())
        reps = ", ".join(f"{k} {v}" for k, v in row["replicas"].items())
        print(
            f"{row['population']}: peak {row['peak_captures_per_s']} captures/s, "
            f"{row['peak_posts_per_s']} POSTs/s, {row['peak_bus_events_per_s']} bus events/s; "
            f"cores {cores}; replicas {reps}; "
            f"{row['payments_storage_gb_per_year']} GB/year of payment data (DB + streams)"
        )


if __name__ == "__main__":
    main()
