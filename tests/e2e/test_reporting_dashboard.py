"""The KPI dashboard in headless Chromium: it loads, each chart shows the API's numbers, and
the browser console stays clean.

Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`); `make test`
installs them when they are missing. Reporting runs in this process behind a real uvicorn
server on a free port, on the session's real NATS and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from contracts.applications import ProcedureRegisteredV1
from services.registry import definition
from services.runtime.server import build_app
from tests.conftest import make_settings
from tests.integration.helpers import provision, publish_envelope, wait_for
from tests.integration.reporting.events import procedure
from tests.integration.reporting.test_kpi_projections import feed

CATALOG = [
    procedure(
        ProcedureRegisteredV1, "JUMINHYO", "市民部", 2, "2026-04-01", None, "2026-09-01 09:00"
    ),
    procedure(ProcedureRegisteredV1, "KOSEKI", "市民部", 2, None, "2026-Q4", "2026-09-01 09:00"),
    procedure(ProcedureRegisteredV1, "NOZEI", "税務部", 1, "2026-10-01", None, "2026-09-01 09:00"),
]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1600",
)


@pytest.fixture
async def reporting_url(
    nats_url: str, database_url: str, namespace: str, db: asyncpg.Connection, nc: NATS
) -> AsyncIterator[str]:
    settings = make_settings("reporting", nats_url, database_url, namespace)
    await provision(nc.jetstream(), namespace)  # the operator's step
    app = build_app(definition("reporting"), settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: asyncio.sleep(0, server.started), timeout=20)
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=20)


def chromium(*extra_flags: str) -> webdriver.Chrome:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary, "install Debian's chromium (make test does)"
    assert driver, "install Debian's chromium-driver (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, *extra_flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


CHART_DATA = """
const out = {};
for (const [id, chart] of Object.entries(window.dashboard.charts)) {
  out[id] = {labels: chart.data.labels, datasets: chart.data.datasets.map(d => d.data)};
}
return out;
"""


def read_dashboard(url: str, screenshot: Path) -> dict[str, Any]:
    driver = chromium()
    try:
        driver.get(f"{url}/dashboard")
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script(
                "return window.dashboard && (window.dashboard.ready || window.dashboard.error)"
            )
        )
        seen = {
            "error": driver.execute_script("return window.dashboard.error || null"),
            "charts": driver.execute_script(CHART_DATA),
            "progress": {
                kpi: driver.execute_script(
                    f"return document.querySelector('#{kpi} .value').textContent"
                )
                for kpi in (
                    "kpi-coverage",
                    "kpi-online-usage",
                    "kpi-cashless-count",
                    "kpi-cashless-amount",
                )
            },
            "console": driver.get_log("browser"),
        }
        driver.save_screenshot(str(screenshot))
        return seen
    finally:
        driver.quit()


def percent(share: float) -> str:
    return f"{share * 100:.2f}%"


async def test_the_dashboard_draws_the_numbers_the_api_returns(
    reporting_url: str, js: JetStreamContext, namespace: str, tmp_path: Path
) -> None:
    await feed(js, namespace)
    for env in CATALOG:
        await publish_envelope(js, namespace, env)
    async with httpx.AsyncClient(base_url=reporting_url) as http:

        async def all_counted() -> Any:
            coverage = (await http.get("/kpi/online-coverage")).json()
            usage = (await http.get("/kpi/online-usage")).json()
            pay = (await http.get("/kpi/cashless-share")).json()
            done = (
                usage["total"]["total"] == 6
                and pay["total"]["count"] == 6
                and coverage["total"]["procedures"] == 3
            )
            return (coverage, usage, pay) if done else None

        coverage, usage, pay = await wait_for(all_counted)

    screenshot = tmp_path / "dashboard.png"
    seen = await asyncio.to_thread(read_dashboard, reporting_url, screenshot)

    assert seen["error"] is None
    assert [e for e in seen["console"] if e["level"] in ("SEVERE", "WARNING")] == []
    assert seen["progress"] == {
        "kpi-coverage": percent(coverage["total"]["coverage_share"]),
        "kpi-online-usage": percent(usage["total"]["online_share"]),
        "kpi-cashless-count": percent(pay["total"]["cashless_share_by_count"]),
        "kpi-cashless-amount": percent(pay["total"]["cashless_share_by_amount"]),
    }
    charts = seen["charts"]
    assert charts["chart-coverage-by-month"] == {
        "labels": [m["month"] for m in coverage["by_month"]],
        "datasets": [
            [m["coverage_share"] for m in coverage["by_month"]],
            [m["planned_share"] for m in coverage["by_month"]],
        ],
    }
    usage_by_department = {d["department"]: d["online_share"] for d in usage["by_department"]}
    assert charts["chart-by-department"] == {
        "labels": [d["department"] for d in coverage["by_department"]],
        "datasets": [
            [d["coverage_share"] for d in coverage["by_department"]],
            [usage_by_department.get(d["department"]) for d in coverage["by_department"]],
        ],
    }
    assert usage_by_department["市民部"] == 0.5  # JUMINHYO and KOSEKI: 3 of 6 online
    months = usage["by_month"]
    assert charts["chart-usage-by-month"] == {
        "labels": [m["month"] for m in months],
        "datasets": [
            [m["online"] for m in months],
            [m["counter"] for m in months],
            [m["mail"] for m in months],
            [m["online_share"] for m in months],
        ],
    }
    top = sorted(usage["by_procedure"], key=lambda p: (-p["total"], p["procedure_code"]))[:15]
    assert charts["chart-usage-by-procedure"] == {
        "labels": [p["procedure_code"] for p in top],
        "datasets": [[p["online_share"] for p in top]],
    }
    assert charts["chart-usage-by-procedure"]["labels"] == ["JUMINHYO", "KOSEKI"]
    facilities = pay["by_facility"]
    assert charts["chart-cashless-by-facility"] == {
        "labels": [f["facility_code"] for f in facilities],
        "datasets": [
            [f["cashless_share_by_count"] for f in facilities],
            [f["cashless_share_by_amount"] for f in facilities],
        ],
    }
    assert charts["chart-cashless-by-month"]["datasets"] == [
        [m["cashless_share_by_count"] for m in pay["by_month"]],
        [m["cashless_share_by_amount"] for m in pay["by_month"]],
    ]
    assert charts["chart-payments-by-method"]["datasets"] == [
        [m["count"] for m in pay["by_method"]]
    ]
    assert charts["chart-payments-by-method"]["labels"][0] == "cash"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
