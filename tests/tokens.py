"""Applicant tokens as the city's login gateway signs them, for tests (HS256, shared secret).

A service started by a test verifies them when ``APPLICANT_JWT_SECRET`` is ``SECRET``:
``monkeypatch.setenv(*ENV)`` before ``start_service``, or ``ENV_VARS`` in a process's env.
"""

from __future__ import annotations

import uuid

from services.runtime.auth import mint_applicant_token

SECRET = "tests-applicant-jwt-secret-0123456789"
ENV = ("APPLICANT_JWT_SECRET", SECRET)
ENV_VARS = {"APPLICANT_JWT_SECRET": SECRET}


def applicant_token(applicant_id: uuid.UUID | str, **claims: object) -> str:
    return mint_applicant_token(uuid.UUID(str(applicant_id)), SECRET, **claims)  # type: ignore[arg-type]


def applicant(applicant_id: uuid.UUID | str | None = None) -> dict[str, str]:
    """Headers of a signed-in applicant (a new one unless ``applicant_id`` is given)."""
    return {"Authorization": f"Bearer {applicant_token(applicant_id or uuid.uuid4())}"}


def applicant_id_of(headers: dict[str, str]) -> str:
    """The account id (``sub``) in headers made by ``applicant``."""
    import jwt

    token = headers["Authorization"].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


# -- the whole city's HTTP credentials, for tests/security -----------------------------------

STAFF_TOKEN = "security-staff-token-000001"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
"""One clerk (staff id ``clerk01``) known to every service."""


def city_env(monkeypatch: object, **more: str) -> None:
    """Staff tokens for all four services and the applicant secret, plus ``more``."""
    values = {
        "APPLICATIONS_STAFF_TOKENS": f"clerk01={STAFF_TOKEN}",
        "PAYMENTS_STAFF_TOKENS": f"clerk01={STAFF_TOKEN}",
        "NOTIFICATIONS_STAFF_TOKENS": f"clerk01={STAFF_TOKEN}",
        "REPORTING_STAFF_TOKENS": f"clerk01={STAFF_TOKEN}",
        **ENV_VARS,
        **more,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)  # type: ignore[attr-defined]
