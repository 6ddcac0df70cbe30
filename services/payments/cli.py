"""`cityhall terminals ...`: register payment terminals and write their credentials."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from services.payments.handlers import TerminalCredentials, TerminalKind

terminals_app = typer.Typer(
    help="Payment terminals (決済端末) at the facilities.", no_args_is_help=True
)


def write_credentials(home: Path, creds: TerminalCredentials, nats_url: str) -> Path:
    """Write a terminal's credentials to ``<home>/terminals/<id>.json`` (owner-only)."""
    folder = home / "terminals"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{creds.terminal_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(
            {
                "terminal_id": creds.terminal_id,
                "facility_code": creds.facility_code,
                "kind": creds.kind,
                "nats_url": nats_url,
                "nats_user": creds.nats_user,
                "nats_password": creds.nats_password,
                "subject": creds.subject,
                "settlement_subject": creds.settlement_subject,
                "inbox_prefix": creds.inbox_prefix,
            },
            f,
            ensure_ascii=False,
            indent=2,
        )
    return path


async def register_and_write(facility_code: str, kind: str, home: Path) -> Path:
    """Register a terminal (migrating the schema first if needed) and write its credentials."""
    from services.payments.app import DEFINITION
    from services.payments.handlers import register_terminal
    from services.runtime import db
    from services.runtime.service import migrations_for
    from services.runtime.settings import load_settings

    settings = load_settings("payments")
    pool = await db.create_pool(settings.dsn, settings.schema_name, min_size=1, max_size=2)
    try:
        await db.migrate(pool, settings.schema_name, migrations_for(DEFINITION))
        creds = await register_terminal(pool, facility_code, kind)
    finally:
        await pool.close()
    return write_credentials(home, creds, settings.nats_url)


def register_command(
    facility_code: Annotated[str, typer.Argument(help="e.g. shiminka (市民課)")],
    kind: Annotated[
        str, typer.Option(help="multi_payment (マルチ決済端末) or pos_register (POSレジ)")
    ] = TerminalKind.MULTI_PAYMENT,
    home: Annotated[Path, typer.Option(help="The stack home (CITYHALL_HOME).")] = Path(".cityhall"),
) -> None:
    """Register a terminal at a facility; print where its credentials were written."""
    from services.payments.domain import PaymentError

    home = Path(os.environ.get("CITYHALL_HOME") or home).resolve()
    try:
        path = asyncio.run(register_and_write(facility_code, kind, home))
    except (PaymentError, ValueError) as exc:
        typer.echo(f"cannot register a terminal: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(str(path))


terminals_app.command("register")(register_command)


def register(app: typer.Typer) -> None:
    """Add `cityhall terminals` (the extension point cityhall/cli.py looks for)."""
    app.add_typer(terminals_app, name="terminals")
