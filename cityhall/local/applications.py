"""`cityhall up`: local credentials for trying the staff endpoints and signing in as a citizen.

* A staff token (職員), made once: the applications staff endpoints, and notifications' and
  reporting's operator endpoints take it too (one local clerk).
* An HS256 secret standing in for the login gateway's key, made once and shared by every
  service (``APPLICANT_JWT_SECRET``): ``cityhall applicant-token <uuid>`` signs with it.
"""

from __future__ import annotations

from pathlib import Path

from cityhall.local import LocalExtras, local_secret


def _made_once(path: Path) -> Path:
    local_secret(path)
    return path


def staff_token(home: Path) -> Path:
    """The local staff token (職員), made once and kept under the stack home (0600)."""
    return _made_once(home / "applications" / "staff.token")


def applicant_jwt_secret(home: Path) -> Path:
    """The local login gateway's signing secret (HS256), made once (0600)."""
    return _made_once(home / "applicant-jwt.secret")


def prepare(home: Path) -> LocalExtras:
    path = staff_token(home)
    staff = f"local-staff={path.read_text().strip()}"
    secret = applicant_jwt_secret(home)
    return LocalExtras(
        env={"APPLICATIONS_STAFF_TOKENS": staff},
        shared_env={
            "APPLICANT_JWT_SECRET": secret.read_text().strip(),
            "NOTIFICATIONS_STAFF_TOKENS": staff,
            "REPORTING_STAFF_TOKENS": staff,
        },
        urls={
            "staff token (Authorization: Bearer …)": str(path),
            "applicant token": "cityhall applicant-token <account uuid>",
        },
    )
