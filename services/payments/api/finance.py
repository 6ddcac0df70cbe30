"""The finance office's routes: settlement batches (調定) posted and listed, and revenue per
facility and day, also as CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from contracts.payments import (
    SettlementBatch,
    SettlementDifference,
)
from services.payments import errors
from services.payments.api.deps import Ctx, Staff, check_range, http_error
from services.payments.handlers import reconciliation
from services.payments.store import settlements as settlement_store
from services.runtime.service import ServiceContext

router = APIRouter()


class SettlementOutcomeOut(BaseModel):
    """The outcome of a settlement batch: reconciled (調定済) or the differences."""

    batch_id: str
    status: str
    reported_yen: int
    fee_yen: int
    net_yen: int
    differences: list[SettlementDifference]


@router.post(
    "/settlements",
    response_model=SettlementOutcomeOut,
    status_code=201,
    responses={
        200: {"model": SettlementOutcomeOut, "description": "Seen before: its first outcome."}
    },
    summary="A facility's day settlement batch (調定): compared with the ledger",
)
async def post_settlement(
    batch: SettlementBatch, ctx: Ctx, _staff: Staff, response: Response
) -> SettlementOutcomeOut:
    try:
        outcome = await reconciliation.reconcile_settlement(ctx.pool, batch)
    except errors.PaymentError as exc:
        raise http_error(exc) from exc
    response.status_code = 200 if outcome.replayed else 201
    return SettlementOutcomeOut(
        batch_id=outcome.batch_id,
        status="reconciled" if outcome.reconciled else "mismatch",
        reported_yen=outcome.reported_yen,
        fee_yen=outcome.fee_yen,
        net_yen=outcome.reported_yen - outcome.fee_yen,
        differences=outcome.differences,
    )


class RevenueDay(BaseModel):
    """Revenue of a facility on a day: gross (recorded in full), processor fee, net."""

    facility_code: str
    business_date: date
    gross_yen: int
    fee_yen: int
    net_yen: int
    reconciliation: str
    """reconciled, mismatch or unreconciled (no settlement batch yet)."""


async def _revenue(
    ctx: ServiceContext, facility: str | None, date_from: date, date_to: date
) -> list[RevenueDay]:
    check_range(date_from, date_to)
    rows = await settlement_store.revenue_by_day(ctx.pool, facility, date_from, date_to)
    return [RevenueDay(**{k: r[k] for k in RevenueDay.model_fields}) for r in rows]


FromDate = Annotated[date, Query(alias="from", description="First day (Asia/Tokyo).")]


ToDate = Annotated[date, Query(alias="to", description="Last day (Asia/Tokyo), included.")]


FacilityFilter = Annotated[
    str | None, Query(alias="facility", pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")
]


@router.get("/revenue", response_model=list[RevenueDay], summary="Revenue per facility per day")
async def revenue(
    ctx: Ctx, _staff: Staff, date_from: FromDate, date_to: ToDate, facility: FacilityFilter = None
) -> list[RevenueDay]:
    return await _revenue(ctx, facility, date_from, date_to)


CSV_COLUMNS = (
    "facility_code",
    "business_date",
    "gross_yen",
    "fee_yen",
    "net_yen",
    "reconciliation",
)


@router.get(
    "/revenue.csv",
    response_class=Response,
    summary="Revenue per facility per day as CSV, for the finance office",
)
async def revenue_csv(
    ctx: Ctx, _staff: Staff, date_from: FromDate, date_to: ToDate, facility: FacilityFilter = None
) -> Response:
    days = await _revenue(ctx, facility, date_from, date_to)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for day in days:
        writer.writerow([getattr(day, c) for c in CSV_COLUMNS])
    filename = f"revenue-{date_from}-{date_to}.csv"
    return Response(
        out.getvalue().encode("utf-8-sig"),  # with a BOM, so spreadsheet software reads UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


class SettlementOut(BaseModel):
    """A settlement batch received and how it compared with the ledger."""

    batch_id: str
    facility_code: str
    business_date: date
    processor: str
    status: str
    reported_yen: int
    fee_yen: int
    differences: list[SettlementDifference]
    received_at: datetime


@router.get(
    "/settlements",
    response_model=list[SettlementOut],
    summary="Reconciliation status (調定): settlement batches by facility and day",
)
async def settlements(
    ctx: Ctx, _staff: Staff, date_from: FromDate, date_to: ToDate, facility: FacilityFilter = None
) -> list[SettlementOut]:
    check_range(date_from, date_to)
    rows = await settlement_store.settlements(ctx.pool, facility, date_from, date_to)
    return [
        SettlementOut(
            **{k: r[k] for k in SettlementOut.model_fields if k != "differences"},
            differences=[
                SettlementDifference.model_validate(d) for d in json.loads(r["differences"])
            ],
        )
        for r in rows
    ]
