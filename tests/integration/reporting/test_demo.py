"""`cityhall demo`: terminals publish months of payments over NATS with their own credentials,
citizens apply over HTTP, and reporting's figures account for every transaction."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from cityhall.commands.payments import write_credentials
from cityhall.natsauth import new_seed, public_key
from services.payments.handlers.registry import register_terminal
from services.reporting import demo
from services.runtime.dlq import list_dead_letters
from tests.integration.helpers import wait_for


def test_the_demo_plan_is_seeded_and_turns_from_cash_toward_cashless() -> None:
    terminals = [demo.Terminal("shiminka-t01", "shiminka", "s", "SU…", "i")]
    plan = list(demo.plan_transactions(terminals, 6, 500, date(2026, 11, 24), seed=7))
    assert plan == list(demo.plan_transactions(terminals, 6, 500, date(2026, 11, 24), seed=7))
    captures = [p for _, p in plan if p["kind"] == "capture"]
    assert len(captures) == 3000
    months = sorted({p["occurred_at"][:7] for p in captures})
    assert months == ["2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11"]
    assert max(p["occurred_at"][:10] for p in captures) <= "2026-11-24"

    def cash_share(month: str) -> float:
        of_month = [p for p in captures if p["occurred_at"].startswith(month)]
        return sum(p["method"] == "cash" for p in of_month) / len(of_month)

    assert cash_share("2026-06") > 0.5 > 0.4 > cash_share("2026-11")
    assert all("card" in p for p in captures if p["method"] == "credit")
    assert all(p["amount_yen"] in (300, 450, 750, 200, 400) for p in captures)


DEMO_STAFF_TOKEN = "demo-counter-staff-token"


def test_without_registered_terminals_the_demo_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(demo.NoTerminals, match="cityhall terminals register"):
        demo.registered_terminals(tmp_path)


async def test_demo_traffic_goes_through_the_real_services_into_the_kpis(
    start_service: Any,
    js: JetStreamContext,
    namespace: str,
    nats_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPLICATIONS_STAFF_TOKENS", f"demo={DEMO_STAFF_TOKEN}")
    applications = await start_service("applications")
    payments = await start_service("payments")
    reporting = await start_service("reporting")
    for facility in ("shiminka", "bijutsukan", "sogo-taiikukan"):
        seed = new_seed()
        terminal = await register_terminal(payments.pool, facility, public_key=public_key(seed))
        write_credentials(tmp_path, terminal, seed.decode(), nats_url)
    terminals = demo.registered_terminals(tmp_path)
    plan = list(demo.plan_transactions(terminals, 3, 40, date(2026, 11, 24), seed=3))

    sent = await demo.publish_payments(nats_url, namespace, plan, lambda _n: None)
    accepted, refused = await demo.submit_applications(
        applications.http, 30, 3, lambda _n: None, DEMO_STAFF_TOKEN
    )

    assert sent == len(plan)
    assert (accepted, refused) == (30, 0)
    captures = {p["transaction_id"]: p for _, p in plan if p["kind"] == "capture"}
    standing = sum(p["amount_yen"] for p in captures.values())
    for _, p in plan:
        if p["kind"] == "refund":
            standing -= p["amount_yen"]
        elif p["kind"] == "void":
            standing -= captures[p["original_transaction_id"]]["amount_yen"]

    async def all_in() -> Any:
        pay = (await reporting.http.get("/kpi/cashless-share")).json()
        usage = (await reporting.http.get("/kpi/online-usage")).json()
        done = pay["total"]["amount_yen"] == standing and usage["total"]["total"] == 30
        return pay if done else None

    pay = await wait_for(all_in, timeout=30)
    assert await list_dead_letters(js, namespace) == []
    assert [m["month"] for m in pay["by_month"]] == ["2026-09", "2026-10", "2026-11"]
    assert {f["facility_code"] for f in pay["by_facility"]} <= {
        "shiminka",
        "bijutsukan",
        "sogo-taiikukan",
    }


def test_demo_forms_satisfy_each_procedures_schema() -> None:
    schema = {
        "type": "object",
        "required": ["when", "email", "areas", "copies", "kind"],
        "properties": {
            "when": {"type": "string", "format": "date"},
            "email": {"type": "string", "format": "email"},
            "areas": {"type": "array", "minItems": 2, "items": {"type": "string"}},
            "copies": {"type": "integer", "minimum": 1},
            "kind": {"enum": ["市県民税", "固定資産税"]},
            "note": {"type": "string"},
        },
    }
    assert demo.form_for(schema) == {
        "when": "2026-12-01",
        "email": "demo@example.jp",
        "areas": ["デモ", "デモ"],
        "copies": 1,
        "kind": "市県民税",
    }
