"""`cityhall terminals ...`: register payment terminals, rotate and revoke their credentials.

A terminal's credential is an nkey: the seed is written once, to the terminal's own file (0600),
and never kept anywhere else; payments records the public key (and every key ever issued, with
who issued or revoked it); the NATS server admits the public keys in force. Each command ends
by making the running server reload its users (`cityhall up` locally; on a cluster the operator
applies the rendered users, docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import asyncpg
import typer

from cityhall.files import write_private
from cityhall.natsauth import new_seed, public_key
from cityhall.stack import refresh_bus_users
from services.payments.handlers.registry import TerminalIdentity, TerminalKind

terminals_app = typer.Typer(
    help="Payment terminals (決済端末) at the facilities.", no_args_is_help=True
)
T = TypeVar("T")

HomeOption = Annotated[Path, typer.Option(help="The stack home (CITYHALL_HOME).")]


def credential_path(home: Path, terminal_id: str) -> Path:
    return home / "terminals" / f"{terminal_id}.json"


def write_credentials(home: Path, terminal: TerminalIdentity, seed: str, nats_url: str) -> Path:
    """The terminal's credential file: its identity, its seed and the server, nothing else;
    readable by its owner only. A rotation replaces it."""
    path = credential_path(home, terminal.terminal_id)
    document = {
        "terminal_id": terminal.terminal_id,
        "facility_code": terminal.facility_code,
        "kind": terminal.kind,
        "nats_url": nats_url,
        "nkey_seed": seed,
        "subject": terminal.subject,
        "settlement_subject": terminal.settlement_subject,
        "inbox_prefix": terminal.inbox_prefix,
    }
    write_private(path, json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    return path


async def _with_pool(action: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run ``action`` on payments' database, migrating its schema first if needed."""
    from services.payments.app import DEFINITION
    from services.runtime import db
    from services.runtime.service import migrations_for
    from services.runtime.settings import load_settings

    settings = load_settings("payments")
    pool = await db.create_pool(settings.dsn, settings.schema_name, min_size=1, max_size=2)
    try:
        await db.migrate(pool, settings.schema_name, migrations_for(DEFINITION))
        return await action(pool)
    finally:
        await pool.close()


def _home(home: Path) -> Path:
    return Path(os.environ.get("CITYHALL_HOME") or home).resolve()


def _public_url() -> str:
    """The server URL a terminal is given: TERMINALS_NATS_URL (the address devices reach on a
    cluster), else NATS_URL."""
    from services.runtime.settings import load_settings

    return os.environ.get("TERMINALS_NATS_URL") or load_settings("payments").nats_url


def _reload(home: Path) -> None:
    """Make the running local NATS admit the keys now in force."""
    from services.runtime.settings import load_settings

    settings = load_settings("payments")
    if refresh_bus_users(home, settings.namespace, {"payments": settings.dsn}):
        typer.echo("nats: users reloaded", err=True)
    else:
        typer.echo(
            f"nats: no local server running under {home}; users written to "
            f"{home / 'nats' / 'auth.conf'} (on a cluster: docs/deploy.md)",
            err=True,
        )


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"cannot change the terminal: {exc}", err=True)
    return typer.Exit(2)


def register_command(
    facility_code: Annotated[str, typer.Argument(help="e.g. shiminka (市民課)")],
    kind: Annotated[
        str, typer.Option(help="multi_payment (マルチ決済端末) or pos_register (POSレジ)")
    ] = TerminalKind.MULTI_PAYMENT,
    home: HomeOption = Path(".cityhall"),
) -> None:
    """Register a terminal at a facility; print where its credential file was written."""
    from services.payments.errors import PaymentError
    from services.payments.handlers.registry import register_terminal

    home = _home(home)
    seed = new_seed()
    try:
        terminal = asyncio.run(
            _with_pool(
                lambda pool: register_terminal(
                    pool,
                    facility_code,
                    kind,
                    public_key=public_key(seed),
                    issued_by=getpass.getuser(),
                )
            )
        )
    except (PaymentError, ValueError) as exc:
        raise _fail(exc) from None
    path = write_credentials(home, terminal, seed.decode(), _public_url())
    _reload(home)
    typer.echo(str(path))


def rotate_command(
    terminal_id: Annotated[str, typer.Argument(help="e.g. shiminka-t01")],
    home: HomeOption = Path(".cityhall"),
) -> None:
    """Give a terminal a new key: the old one is refused from now on (its connection closed);
    the new credential file replaces the old one."""
    from services.payments.errors import PaymentError
    from services.payments.handlers.registry import rotate_terminal_key

    home = _home(home)
    seed = new_seed()
    try:
        terminal = asyncio.run(
            _with_pool(
                lambda pool: rotate_terminal_key(
                    pool, terminal_id, public_key(seed), getpass.getuser()
                )
            )
        )
    except PaymentError as exc:
        raise _fail(exc) from None
    path = write_credentials(home, terminal, seed.decode(), _public_url())
    _reload(home)
    typer.echo(str(path))


def revoke_command(
    terminal_id: Annotated[str, typer.Argument(help="e.g. shiminka-t01")],
    reason: Annotated[str, typer.Option(help="Why: lost, stolen, retired, ...")] = "revoked",
    home: HomeOption = Path(".cityhall"),
) -> None:
    """Revoke a terminal's key: it is disconnected within seconds and cannot log in again;
    its credential file is removed. The terminal stays registered (its payments and receipts
    keep their references); `rotate` gives it a new key."""
    from services.payments.errors import PaymentError
    from services.payments.handlers.registry import revoke_terminal

    home = _home(home)
    try:
        revoked = asyncio.run(
            _with_pool(lambda pool: revoke_terminal(pool, terminal_id, getpass.getuser(), reason))
        )
    except PaymentError as exc:
        raise _fail(exc) from None
    credential_path(home, terminal_id).unlink(missing_ok=True)
    _reload(home)
    typer.echo(f"{terminal_id}: " + (f"key {revoked} revoked" if revoked else "no key in force"))


terminals_app.command("register")(register_command)
terminals_app.command("rotate")(rotate_command)
terminals_app.command("revoke")(revoke_command)


def register(app: typer.Typer) -> None:
    """Add `cityhall terminals`."""
    app.add_typer(terminals_app, name="terminals")
