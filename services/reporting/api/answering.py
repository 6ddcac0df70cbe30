"""What every KPI route shares: its answer kept per read-model version (``answers.py``), and
the formats of its figures (months, days, shares, CSV).

Every share in a response is ``part / whole`` rounded half-even to 4 decimals, null when the
whole is 0 (``domain.share``). Months are ``YYYY-MM`` and days ``YYYY-MM-DD`` in Asia/Tokyo;
money is integer yen.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from services.reporting import answers, domain, store
from services.reporting.answers import Answer, AnswerCache
from services.reporting.settings import ReportingSettings, load_reporting_settings
from services.reporting.store import Period
from services.runtime.service import ServiceContext

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: If-None-Match named this answer's ETag (no body)."}
}
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}
SHARE_DOC = f"Shares: {domain.SHARE_ROUNDING}."

APPLICATION_FAMILY = ("applications",)
"""Answers computed from the application events' read-models (usage, coverage, turnaround)."""
PAYMENT_FAMILY = ("payments",)
"""Answers computed from the payment events' read-models (cashless share, revenue)."""
BOTH_FAMILIES = ("applications", "payments")
CATALOG = ("procedures",)


def answer_cache(ctx: ServiceContext) -> AnswerCache:
    def build() -> AnswerCache:
        mb = ctx.provide(ReportingSettings, load_reporting_settings).answer_cache_mb
        return AnswerCache(mb * 2**20)

    return ctx.provide(AnswerCache, build)


async def kept(
    ctx: ServiceContext,
    request: Request,
    key: Hashable,
    families: Sequence[str],
    build: Callable[[], Awaitable[Answer]],
    *,
    period: Period | None = None,
    reads: Sequence[str] = (),
) -> Response:
    """The answer to ``key`` under the read-models' current versions: kept, or built now (and
    kept). The versions are read before ``build``'s queries run, so what they read is at least
    that recent (see answers.py).

    An answer for a bounded ``period`` that reads only the months of ``reads`` and the catalog
    is kept under those months' versions instead of its families' (migration 0013): a batch
    that changes other months (the current one, nearly always) leaves it as it is, one that
    changes a month of the period or the catalog makes it new. ``reads`` must name every
    table its queries read but the catalog."""
    cache = answer_cache(ctx)
    if period is not None and period != Period() and reads:
        versions: tuple[int, ...] = (await store.period_version(ctx.pool, reads, period, CATALOG),)
    else:
        versions = await store.projection_versions(ctx.pool, families)
    answer = await cache.get_or_build(key, versions, build)
    return answers.respond(request, answer)


def json_answer(body: Mapping[str, Any]) -> Answer:
    """A KPI body as JSON. Bodies are typed dicts (the routes' ``response_model``, checked by
    mypy where they are built): a year of the city is tens of thousands of rows, and a pydantic
    object per row would cost more than the queries. orjson refuses NaN, which the shares'
    rounding never gives."""
    return Answer(orjson.dumps(body), "application/json")


def csv_answer(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Answer:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Answer(
        out.getvalue().encode(),
        "text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


@functools.lru_cache(maxsize=4096)
def month_text(d: date) -> str:
    """YYYY-MM. Called per row (40,000 rows in a year of open data) with a few dozen distinct
    months: remembered, it costs a dictionary lookup instead of isoformat and a slice."""
    return d.isoformat()[:7]


def share_text(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
