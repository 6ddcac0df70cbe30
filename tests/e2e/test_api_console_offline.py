"""The API console (/docs, Swagger UI) in headless Chromium with the network cut: every asset
comes from the service itself, none from a CDN (city networks, LGWAN, are closed), and the
console shows the service's operations. There is no /redoc: ReDoc's bundle loads its logo
from its CDN.

The browser resolves no host name but 127.0.0.1 (``--host-resolver-rules``), so a page that
still named a CDN would load without its script and draw nothing. Reporting runs in this
process behind a real uvicorn server, as in the dashboard's test.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.test_reporting_dashboard import chromium, reporting_url

__all__ = ["reporting_url"]  # the fixture, used by name below

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"

RESOURCES = "return performance.getEntriesByType('resource').map(e => e.name)"


async def test_swagger_ui_loads_with_no_network_but_the_service(
    reporting_url: str,
) -> None:
    # the browser waits on the service, which runs on this event loop: drive it from a thread
    assets = await asyncio.to_thread(open_console, reporting_url)
    origin = urlsplit(reporting_url).netloc
    for asset in assets:
        assert urlsplit(asset).netloc == origin, asset
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)


def open_console(reporting_url: str) -> list[str]:
    """/docs, drawn; the assets it loaded."""
    driver = chromium(OFFLINE)
    try:
        driver.get(f"{reporting_url}/docs")
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script(
                "return document.querySelectorAll('.swagger-ui .opblock').length"
            )
        )
        title = driver.execute_script(
            "return document.querySelector('.swagger-ui .info .title').textContent"
        )
        assert "cityhall reporting" in title
        operations = driver.execute_script(
            "return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)"
        )
        assert any("/kpi/online-usage" in path for path in operations)
        assets: list[str] = driver.execute_script(RESOURCES)
    finally:
        driver.quit()
    return assets
