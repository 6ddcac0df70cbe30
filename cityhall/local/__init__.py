"""What each service adds to `cityhall up`: one module per service with ``prepare(home)``.

``cityhall/stack.py`` calls them by name (``LOCAL_SET_UPS``); they live here, with the tooling,
because they start processes and write local secrets, which no service does for itself.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cityhall.files import write_private


@dataclass
class Sidecar:
    """A helper process a service needs locally (an SMTP sink, a payment-provider simulator)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_port: int | None = None
    """When set, start-up waits until 127.0.0.1:<port> accepts connections."""
    ready_timeout_s: float = 20.0
    process: subprocess.Popen[bytes] | None = None


@dataclass
class LocalExtras:
    """What ``cityhall/local/<service>.py``'s ``prepare(home)`` returns for `cityhall up`."""

    env: dict[str, str] = field(default_factory=dict)
    """Added to that service's environment."""
    shared_env: dict[str, str] = field(default_factory=dict)
    """Added to every service's environment."""
    sidecars: list[Sidecar] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    """Shown in the table printed when the stack is up (name -> url)."""


def local_secret(path: Path) -> str:
    """A secret made once for the local stack and kept in its own file (0600)."""
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    write_private(path, value + "\n")
    return value
