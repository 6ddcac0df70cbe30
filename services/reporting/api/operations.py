"""Operations, for operators only (REPORTING_STAFF_TOKENS): how far each projection is
behind, and the OpenMetrics exposition for Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from services.reporting import metrics, store
from services.reporting.answers import Answer
from services.reporting.api.answering import BOTH_FAMILIES, answer_cache
from services.reporting.api.deps import Ctx, staff
from services.reporting.lag import ConsumerLag, projection_lag
from services.reporting.subscribers import BINDINGS

router = APIRouter(tags=["operations"], dependencies=[Depends(staff)])


@router.get(
    "/projection/lag",
    response_model=list[ConsumerLag],
    summary="How far each projection is behind its stream (events and seconds)",
)
async def lag(ctx: Ctx) -> list[ConsumerLag]:
    return await projection_lag(ctx.js, ctx.settings.namespace, BINDINGS)


@router.get(
    "/metrics",
    response_class=Response,
    summary="OpenMetrics: KPI gauges and the projection lag, for Prometheus",
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}}},
)
async def openmetrics(ctx: Ctx) -> Response:
    async def build() -> Answer:
        return Answer(await metrics.kpi_exposition(ctx.pool), metrics.CONTENT_TYPE)

    cache = answer_cache(ctx)
    versions = await store.projection_versions(ctx.pool, BOTH_FAMILIES)
    kpis, lags = await asyncio.gather(
        cache.get_or_build(("metrics",), versions, build),
        projection_lag(ctx.js, ctx.settings.namespace, BINDINGS),
    )
    return Response(kpis.body + metrics.lag_exposition(lags), media_type=metrics.CONTENT_TYPE)
