"""A served process's opt-in garbage-collector tuning (GC_TUNING; server.py: freeze_heap).

Run in a process of its own: freezing the heap and raising the thresholds here would change
the rest of the test session's collections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.runtime.server import GC_THRESHOLDS

PROBE = """
import gc, json
from services.runtime.server import freeze_heap
before = gc.get_threshold()
freeze_heap()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_freezing_the_heap_also_collects_the_young_generation_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(seen["before"]) == (700, 10, 10)  # Python's defaults, before
    assert tuple(seen["after"]) == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > seen["before"][0]
    assert seen["frozen"] > 10_000  # the imported modules and their objects


def test_the_interpreter_is_left_as_python_sets_it_unless_gc_tuning_is_asked_for() -> None:
    from services.runtime.settings import ServiceSettings

    db = "postgresql://payments@db:5432/payments"
    assert ServiceSettings(service="payments", database_url=db).gc_tuning is False
    assert ServiceSettings(service="payments", database_url=db, GC_TUNING="true").gc_tuning
