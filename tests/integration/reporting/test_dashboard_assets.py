"""The dashboard is served by reporting itself: its page, script and the vendored Chart.js."""

from __future__ import annotations

from typing import Any


async def test_the_dashboard_and_its_chart_library_are_served_without_a_cdn(
    start_service: Any,
) -> None:
    reporting = await start_service("reporting")
    page = await reporting.http.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="dashboard/static/chart.umd.min.js"' in page.text
    assert "https://" not in page.text
    chart = await reporting.http.get("/dashboard/static/chart.umd.min.js")
    assert chart.status_code == 200
    assert chart.text.startswith("/*!\n * Chart.js v4.6.1")
    licence = await reporting.http.get("/dashboard/static/chart.js.LICENSE.md")
    assert "MIT" in licence.text or "Permission is hereby granted" in licence.text


async def test_an_unknown_dashboard_asset_is_not_found(start_service: Any) -> None:
    reporting = await start_service("reporting")
    resp = await reporting.http.get("/dashboard/static/..%2F..%2Fapp.py")
    assert resp.status_code == 404
