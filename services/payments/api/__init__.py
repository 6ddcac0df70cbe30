"""Payments' HTTP API: one module per family of routes (the registry, payments, the staff
queue, online payments, the finance office's), each with its routes and the models it
returns; ``deps.py`` holds what they share, and refusals map to HTTP there only."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.payments.api import attention, finance, online_payments, payments, registry
from services.runtime.auth import caller
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters

router = APIRouter(
    tags=["payments"],
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route identifies its caller and counts it against the caller's rate limit. Staff
routes need PAYMENTS_STAFF_TOKENS; a payment request is its applicant's (or staff's); the
facilities are public; the provider's webhook is authenticated by its HMAC signature."""
# The staff queue before payments: /payments/attention must not be taken for a payment id.
for family in (registry, attention, payments, online_payments, finance):
    router.include_router(family.router)
