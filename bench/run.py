"""`make bench`: the performance suite, one line per figure, in under 10 minutes.

    make bench                       # embedded NATS and PostgreSQL of its own
    .venv/bin/python bench/run.py --only pipeline
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/run.py

Runs each section (``bench/<section>.py``) as its own process, so each starts its servers
and services afresh and none inherits another's warm caches, then prints every figure once
more with the summary, ending with the line

    bench: e2e_events_per_s=<n> raw_pipeline_events_per_s=<n> ratio=<r>

The suite reports; it does not gate anything (no figure fails a build). Results are also
written to ``bench/results/latest.json`` (not committed) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTIONS: dict[str, tuple[str, list[str]]] = {
    # section: (what it measures, its arguments)
    "pipeline": (
        "terminal to dashboard vs raw NATS + PostgreSQL, freshness, sync_interval: always",
        [],
    ),
    "commands": ("POST /applications on one applications process", []),
    "kpi_queries": ("every KPI query on a year of city data", []),
}
MEMORY_TARGET_MB = 200


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
    }


def run_section(name: str, extra: list[str], results_dir: Path) -> dict[str, Any]:
    out = results_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    started = time.monotonic()
    print(f"== {name}: {SECTIONS[name][0]}", flush=True)
    proc = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), "--json", str(out), *extra],
        check=False,
    )
    took = time.monotonic() - started
    if proc.returncode != 0 or not out.exists():
        print(f"!! {name} failed (exit {proc.returncode}) after {took:.0f} s", flush=True)
        return {"failed": True, "exit": proc.returncode, "seconds": took}
    data: dict[str, Any] = json.loads(out.read_text())
    data["seconds"] = round(took, 1)
    print(f"== {name}: {took:.0f} s", flush=True)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="sections")
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (a smoke run, not for the record)"
    )
    args = parser.parse_args()
    quick = {
        "pipeline": ["--events", "10000", "--raw-events", "10000", "--fresh-s", "5"],
        "commands": ["--max-seconds", "5", "--paced-seconds", "5"],
        "kpi_queries": ["--applications", "100000", "--payments", "200000"],
    }
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    info = machine()
    print(
        f"bench on {info['cpus']} cores ({info['cpu']}), Python {info['python']}, "
        f"load {info['load_average'][0]:.2f}, PostgreSQL {info['database']}",
        flush=True,
    )
    report: dict[str, Any] = {"machine": info, "sections": {}}
    for name in args.only or list(SECTIONS):
        extra = quick.get(name, []) if args.quick else []
        report["sections"][name] = run_section(name, SECTIONS[name][1] + extra, results_dir)
    report["seconds"] = round(time.monotonic() - started, 1)
    (results_dir / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))

    print(f"\n== summary ({report['seconds']:.0f} s)")
    peaks: dict[str, float] = {}
    for name, data in report["sections"].items():
        if data.get("failed"):
            print(f"{name}: FAILED")
            continue
        for f in data.get("figures", []):
            value = f["value"]
            shown = f"{value:,}" if isinstance(value, int) else str(value)
            print(f"{f['name']:<44} {shown:>12} {f['unit']:<9} {f['note']}".rstrip())
            if "_peak_rss_mb" in f["name"]:
                service = f["name"].split(".", 1)[1].split("_peak_rss_mb")[0]
                peaks[service] = max(peaks.get(service, 0.0), float(value))
    for service, mb in sorted(peaks.items()):
        verdict = "under" if mb < MEMORY_TARGET_MB else "OVER"
        print(f"memory.max_{service}_rss_mb{'':<20} {mb:>12} MB        {verdict} 200 MB")
    summary = report["sections"].get("pipeline", {}).get("summary")
    if summary:
        print(
            f"bench: e2e_events_per_s={summary['e2e_events_per_s']} "
            f"raw_pipeline_events_per_s={summary['raw_pipeline_events_per_s']} "
            f"ratio={summary['ratio']}"
        )
    else:
        print("bench: e2e_events_per_s=n/a raw_pipeline_events_per_s=n/a ratio=n/a")
    if any(d.get("failed") for d in report["sections"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
