"""`cityhall up`: an embedded SMTP sink (aiosmtpd) that catches the mail the service sends.

The sink is aiosmtpd's own command-line server with its Maildir handler, run as a sidecar
process; mail lands in ``<home>/mail`` (a Maildir) and ``cityhall mail`` shows it. The
notifications service's SMTP settings point at the sink.
"""

from __future__ import annotations

import mailbox
import os
import socket
import sys
from pathlib import Path

from cityhall.embedded import free_port
from cityhall.local import LocalExtras, Sidecar, local_secret

DEFAULT_SINK_PORT = 8025


def mail_dir(home: Path) -> Path:
    return home / "mail"


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def sink_port() -> int:
    """CITYHALL_SMTP_PORT; else 8025 when it is free, except for a stack on its own ports
    (CITYHALL_PORT_BASE, as tests run them side by side), which takes any free port."""
    if wanted := os.environ.get("CITYHALL_SMTP_PORT"):
        return int(wanted)
    if os.environ.get("CITYHALL_PORT_BASE"):
        return free_port()
    return DEFAULT_SINK_PORT if bindable(DEFAULT_SINK_PORT) else free_port()


def prepare(home: Path) -> LocalExtras:
    port = sink_port()
    folder = mail_dir(home)
    mailbox.Maildir(folder, create=True)  # cur/, new/, tmp/ so `cityhall mail` reads it now
    sink = Sidecar(
        name="smtp-sink",
        argv=[
            sys.executable,
            "-m",
            "aiosmtpd",
            "--nosetuid",
            "--smtputf8",
            "--listen",
            f"127.0.0.1:{port}",
            "--class",
            "aiosmtpd.handlers.Mailbox",
            str(folder),
        ],
        ready_port=port,
    )
    return LocalExtras(
        env={
            "NOTIFY_WEBHOOK_SECRET": local_secret(home / "notifications" / "webhook.secret"),
            "NOTIFY_SMTP_HOST": "127.0.0.1",
            "NOTIFY_SMTP_PORT": str(port),
            "NOTIFY_SMTP_STARTTLS": "false",
        },
        sidecars=[sink],
        urls={"mail (SMTP sink)": f"smtp://127.0.0.1:{port} -> `cityhall mail`"},
    )
