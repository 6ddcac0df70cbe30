"""`cityhall mail`: what the notifications service sent to the local SMTP sink (`cityhall up`);
`cityhall notifications failed | pending | resend`: the operators' delivery routes."""

from __future__ import annotations

import json
import mailbox
import os
import uuid
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any

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
    app.add_typer(notifications_app, name="notifications")

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


# -- `cityhall notifications failed | pending | resend`: the operators' routes over HTTP -------

notifications_app = typer.Typer(
    help="Deliveries that failed or wait for a retry, and sending one again (the operator "
    "routes of the notifications service).",
    no_args_is_help=True,
)
DEFAULT_URL = "http://127.0.0.1:8003"


def operator_api() -> tuple[str, dict[str, str]]:
    """The notifications service's URL and the operator's staff credential: the environment
    (CITYHALL_NOTIFICATIONS_URL, CITYHALL_STAFF_TOKEN), else what `cityhall up` made under
    CITYHALL_HOME (which operator.env names): <home>/applications/staff.token."""
    url = os.environ.get("CITYHALL_NOTIFICATIONS_URL") or DEFAULT_URL
    token = os.environ.get("CITYHALL_STAFF_TOKEN")
    if not token:
        path = Path(os.environ.get("CITYHALL_HOME") or ".cityhall") / "applications" / "staff.token"
        token = path.read_text().strip() if path.is_file() else None
    if not token:
        typer.echo(
            "no staff credential: set CITYHALL_STAFF_TOKEN, or run `cityhall up` (it makes "
            "<home>/applications/staff.token)",
            err=True,
        )
        raise typer.Exit(1)
    return url.rstrip("/"), {"Authorization": f"Bearer {token}"}


def _detail(body: Any) -> str:
    """The service's ``detail``, in one line: a message, a named error, or the bad fields."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        return f"{detail.get('error')}: {detail.get('message')}"
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail
        )
    return str(detail)


def call(method: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """One request to the operator routes; a refusal or an unreachable service exits 1."""
    import httpx

    url, headers = operator_api()
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=15) as http:
            answer = http.request(method, path, params=params)
    except httpx.TransportError as exc:
        typer.echo(f"cannot reach the notifications service at {url}: {exc}", err=True)
        typer.echo("(is `cityhall up` running? else set CITYHALL_NOTIFICATIONS_URL)", err=True)
        raise typer.Exit(1) from None
    try:
        body = answer.json()
    except ValueError:
        body = answer.text
    if answer.status_code >= 400:
        typer.echo(f"refused ({answer.status_code}): {_detail(body)}", err=True)
        raise typer.Exit(1)
    return body


def _jst(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S JST")


def _filters(kind: str | None, channel: str | None, since: str | None, limit: int) -> Any:
    given = {"kind": kind, "channel": channel, "since": since, "limit": limit}
    return {k: v for k, v in given.items() if v is not None}


KindOption = Annotated[
    str | None, typer.Option(help="application_status, payment, certificate or staff_alert.")
]
ChannelOption = Annotated[str | None, typer.Option(help="email or webhook.")]
SinceOption = Annotated[
    str | None, typer.Option(help="Changed at or after, e.g. 2026-11-24T09:00:00+09:00.")
]
LimitOption = Annotated[int, typer.Option(min=1, max=500, help="How many of them.")]
JsonOption = Annotated[bool, typer.Option("--json", help="A JSON array ([] when none).")]


def _print_page(page: Any, title: str, columns: dict[str, Any], as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    items = page["items"]
    if as_json:
        typer.echo(json.dumps(items, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{title} ({len(items)} of {page['total']})", title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    for item in items:
        table.add_row(*(str(show(item) or "") for show in columns.values()))
    Console().print(table)


@notifications_app.command("failed")
def failed(
    kind: KindOption = None,
    channel: ChannelOption = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Deliveries that failed for good, newest first, with the reason (times in Asia/Tokyo)."""
    page = call("GET", "/notifications/failed", _filters(kind, channel, since, limit))
    columns = {
        "id": lambda i: i["id"],
        "failed at": lambda i: _jst(i["failed_at"]),
        "rule": lambda i: i["rule"],
        "channel": lambda i: i["channel"],
        "recipient": lambda i: i["recipient"],
        "attempts": lambda i: i["attempts"],
        "reason": lambda i: i["reason"],
    }
    _print_page(page, "failed deliveries", columns, as_json)
    if page["items"] and not as_json:
        typer.echo("after fixing the cause: cityhall notifications resend ID")


@notifications_app.command("pending")
def pending(
    kind: KindOption = None,
    channel: ChannelOption = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Deliveries not done yet, the next attempt first: `failed` ones wait for a retry."""
    page = call("GET", "/notifications/pending", _filters(kind, channel, since, limit))
    columns = {
        "id": lambda i: i["id"],
        "status": lambda i: i["status"],
        "next attempt": lambda i: _jst(i["next_attempt_at"]),
        "attempts": lambda i: i["attempts"],
        "rule": lambda i: i["rule"],
        "recipient": lambda i: i["recipient"],
        "last reason": lambda i: i["reason"],
    }
    _print_page(page, "deliveries waiting", columns, as_json)


@notifications_app.command("resend")
def resend(
    notification_id: Annotated[str, typer.Argument(help="The id `failed` lists.")],
    as_json: JsonOption = False,
) -> None:
    """Send a failed notification again, to the recipient's current address (correct the
    contact first: PUT /contacts/{applicant_id}). Refused if it is not failed for good."""
    try:
        uuid.UUID(notification_id)
    except ValueError:
        typer.echo(f"not a notification id: {notification_id!r}", err=True)
        raise typer.Exit(2) from None
    answer = call("POST", f"/notifications/{notification_id}/resend")
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    r = answer["resend"]
    changed = "a corrected address" if r["address_changed"] else "the same address"
    typer.echo(
        f"{notification_id}: queued to send again to {r['address']} ({changed}), asked by "
        f"{r['requested_by']} at {_jst(r['requested_at'])}; see `cityhall notifications pending`"
    )
