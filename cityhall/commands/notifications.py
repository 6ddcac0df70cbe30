"""`cityhall mail`: what the notifications service sent to the local SMTP sink (`cityhall up`)."""

from __future__ import annotations

import json
import mailbox
import os
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated

import typer

from cityhall.local.notifications import mail_dir
from services.notifications.templates import TOKYO


def sent_mail(home: Path) -> list[EmailMessage]:
    """The messages in the sink's Maildir, oldest first."""
    folder = mail_dir(home)
    if not (folder / "cur").is_dir():
        return []
    box = mailbox.Maildir(folder, create=False)
    parser = BytesParser(policy=policy.default)
    found: list[tuple[float, EmailMessage]] = []
    for key in box.iterkeys():
        msg = parser.parsebytes(box.get_bytes(key))
        assert isinstance(msg, EmailMessage)
        found.append((box.get_message(key).get_date(), msg))
    found.sort(key=lambda pair: pair[0])
    return [msg for _, msg in found]


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if isinstance(part, EmailMessage) else ""


def _shown_date(msg: EmailMessage) -> str:
    """The Date header in Asia/Tokyo."""
    raw = msg["Date"]
    if raw is None:
        return ""
    return parsedate_to_datetime(str(raw)).astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S JST")


def register(app: typer.Typer) -> None:
    @app.command("mail")
    def mail(
        home: Annotated[Path, typer.Option(help="The stack's home (cityhall up).")] = Path(
            ".cityhall"
        ),
        limit: Annotated[int, typer.Option(min=1, help="How many of the newest.")] = 20,
        show: Annotated[
            int | None, typer.Option(help="Print message N of the list (1 = oldest shown).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Show the mail the notifications service sent to the local SMTP sink."""
        from rich.console import Console
        from rich.table import Table

        root = Path(os.environ.get("CITYHALL_HOME") or home)
        messages = sent_mail(root)[-limit:]
        if as_json:
            for msg in messages:
                typer.echo(
                    json.dumps(
                        {
                            "date": _shown_date(msg),
                            "to": str(msg["To"]),
                            "subject": str(msg["Subject"]),
                            "message_id": str(msg["Message-ID"]),
                            "text": _text(msg),
                        },
                        ensure_ascii=False,
                    )
                )
            return
        console = Console()
        if show is not None:
            if not 1 <= show <= len(messages):
                typer.echo(f"no message {show}; there are {len(messages)}", err=True)
                raise typer.Exit(1)
            msg = messages[show - 1]
            console.print(f"[bold]Date:[/] {_shown_date(msg)}", markup=True, highlight=False)
            for header in ("From", "To", "Subject", "Message-ID"):
                console.print(f"[bold]{header}:[/] {msg[header]}", highlight=False)
            console.print()
            console.print(_text(msg), markup=False, highlight=False)
            return
        table = Table(
            title=f"mail caught by the SMTP sink in {mail_dir(root)} ({len(messages)})",
            title_justify="left",
        )
        for column in ("#", "date", "to", "subject"):
            table.add_column(column, overflow="fold")
        for i, msg in enumerate(messages, 1):
            table.add_row(str(i), _shown_date(msg), str(msg["To"]), str(msg["Subject"]))
        console.print(table)
