"""What the payments routes share: the service, the staff check, the longest date range, and
the one place where the payment rules' refusals become HTTP responses (``http_error``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Depends, HTTPException

from services.payments import errors
from services.runtime.auth import Who, require_staff, staff_credentials
from services.runtime.service import ServiceContext, service_context

Ctx = Annotated[ServiceContext, Depends(service_context)]


MAX_DAYS = 366
"""The longest date range an unpaged staff query (revenue, settlements) may span."""


async def staff_member(ctx: Ctx, who: Who) -> str:
    """The staff member calling (``Authorization: Bearer <token>``, PAYMENTS_STAFF_TOKENS)."""
    if not staff_credentials(ctx).staff_tokens:
        raise HTTPException(503, detail="PAYMENTS_STAFF_TOKENS is not configured")
    staff_id = require_staff(who).staff_id
    assert staff_id is not None
    return staff_id


def check_range(date_from: date, date_to: date) -> None:
    if date_to < date_from:
        raise HTTPException(422, detail="to: must not be before from")
    if (date_to - date_from).days >= MAX_DAYS:
        raise HTTPException(422, detail=f"to: at most {MAX_DAYS} days after from")


Staff = Annotated[str, Depends(staff_member)]


HTTP_STATUS: dict[type[errors.PaymentError], int] = {
    errors.UnknownFacility: 404,
    errors.UnknownTerminal: 404,
    errors.UnknownPayment: 404,
    errors.UnknownReceipt: 404,
    errors.RefundExceedsCapture: 409,
    errors.PaymentAlreadyVoided: 409,
    errors.VoidNotAllowed: 409,
    errors.MismatchedPayment: 409,
    errors.TerminalNotAtFacility: 409,
    errors.UnknownPaymentRequest: 404,
    errors.ConfirmationConflict: 409,
    errors.UnknownAttention: 404,
    errors.AttentionAlreadyDecided: 409,
    errors.AttachNotAllowed: 409,
    errors.IdempotencyKeyReused: 422,
}


def http_error(exc: errors.PaymentError) -> HTTPException:
    """The one place where the payment rules' refusals become HTTP responses."""
    status = next((s for t, s in HTTP_STATUS.items() if isinstance(exc, t)), 400)
    return HTTPException(status, detail={"error": type(exc).__name__, "message": str(exc)})
