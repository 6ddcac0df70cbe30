"""`cityhall up`: a staff credential for trying the staff endpoints locally."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cityhall.stack import LocalExtras


def staff_token(home: Path) -> Path:
    """The local staff token (職員), made once and kept under the stack home (0600)."""
    path = home / "applications" / "staff.token"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path


def prepare(home: Path) -> LocalExtras:
    path = staff_token(home)
    return LocalExtras(
        env={"APPLICATIONS_STAFF_TOKENS": f"local-staff={path.read_text().strip()}"},
        urls={"staff token (Authorization: Bearer …)": str(path)},
    )
