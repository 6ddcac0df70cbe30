"""The KPI dashboard (ダッシュボード): one static page served by reporting, no build step.

The page (``static/dashboard.html``) reads the JSON API from the browser and draws with
Chart.js, vendored under ``static/vendor/`` with its licence (no CDN at run time).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["dashboard"])

_STATIC = resources.files("services.reporting").joinpath("static")
_ASSETS: dict[str, tuple[str, str]] = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "chart.umd.min.js": ("vendor/chart.umd.min.js", "text/javascript; charset=utf-8"),
    "chart.js.LICENSE.md": ("vendor/chart.js.LICENSE.md", "text/markdown; charset=utf-8"),
}
_CACHE = {"cache-control": "no-cache"}


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    summary="KPI dashboard: progress to 100% and trends by month",
)
async def dashboard_page() -> HTMLResponse:
    return HTMLResponse(_STATIC.joinpath("dashboard.html").read_text("utf-8"), headers=_CACHE)


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    asset = _ASSETS.get(name)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard asset {name!r}")
    path, media_type = asset
    return Response(_STATIC.joinpath(path).read_bytes(), media_type=media_type, headers=_CACHE)
