"""The identity (本人確認) route: the single-use challenge a signed-in applicant signs with a
group-2 application, and its view."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.applications.api.deps import Ctx, IdemHeader, idempotency_of, respond, settings_of
from services.applications.handlers import submission
from services.applications.identity import SIGNING_PURPOSE, Challenge
from services.runtime.auth import Who

router = APIRouter()


class ChallengeView(BaseModel):
    """A challenge to sign with the My Number card: the signed content binds ``applicant``,
    ``challenge`` and ``purpose`` with the application (see ``SignedApplication``)."""

    challenge: str = Field(examples=["q3Vb0kX2mJ8sT1yR6wE4uI7oP9aS5dF3gH2jK8lZ0xC"])
    applicant: uuid.UUID = Field(description="The caller's own account id (the token's sub).")
    purpose: str = Field(examples=[SIGNING_PURPOSE])
    expires_at: datetime

    @classmethod
    def of(cls, c: Challenge) -> ChallengeView:
        return cls(
            challenge=c.value,
            applicant=c.applicant_id,
            purpose=SIGNING_PURPOSE,
            expires_at=c.expires_at,
        )


def _render_challenge(c: Challenge) -> dict[str, Any]:
    return ChallengeView.of(c).model_dump(mode="json")


@router.post(
    "/identity/challenges",
    status_code=status.HTTP_201_CREATED,
    response_model=ChallengeView,
    tags=["identity"],
    summary="A single-use challenge for the signed-in applicant to sign a group-2 application",
)
async def issue_challenge(
    ctx: Ctx, who: Who, request: Request, idempotency_key: IdemHeader = None
) -> JSONResponse:
    """Step 1 of a signed (group-2) submission: the applicant asks for a challenge, signs it
    with the application using the My Number card's signature key, and submits both within
    the challenge's lifetime (``APPLICATIONS_IDENTITY_CHALLENGE_LIFETIME_S``)."""
    if who.applicant_id is None:
        if who.staff_id is not None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "challenges are for applicants: a signature binds the applicant's own account",
            )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "sign in: a challenge is issued to the applicant of the login gateway's token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    lifetime = timedelta(seconds=settings_of(ctx).identity_challenge_lifetime_s)
    idem = idempotency_of(idempotency_key, who, request, {})
    return await respond(
        ctx,
        idem,
        submission.issue_challenge(who.applicant_id, lifetime),
        _render_challenge,
        status.HTTP_201_CREATED,
    )
