"""The `cityhall` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="cityhall: Koriyama's digital city hall on NATS JetStream and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
)
contracts_app = typer.Typer(help="Event contracts: JSON Schema and AsyncAPI.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Dead letters: messages a consumer could not process.", no_args_is_help=True
)
app.add_typer(contracts_app, name="contracts")
app.add_typer(dlq_app, name="dlq")
outbox_app = typer.Typer(help="The services' transactional outboxes.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
nats_app = typer.Typer(
    help="NATS identities: the nkeys of the services and the operator, and the users the "
    "server admits (docs/security.md, docs/deploy.md).",
    no_args_is_help=True,
)
app.add_typer(nats_app, name="nats")


def _load_operator_env() -> None:
    """Commands run beside `cityhall up` (dlq list, reporting rebuild, demo, ...) reach its
    servers as the operator: `up` writes <home>/operator.env; read it when NATS_URL is unset.
    Variables already set win; `up` and `serve` themselves never read it."""
    if os.environ.get("NATS_URL") or sys.argv[1:2] in (["up"], ["serve"], ["relay"]):
        return
    path = Path(os.environ.get("CITYHALL_HOME") or ".cityhall") / "operator.env"
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name and name not in os.environ:
            os.environ[name] = value


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


@app.command()
def up(
    home: Annotated[Path, typer.Option(help="Where data and logs live.")] = Path(".cityhall"),
    nats_port: Annotated[int, typer.Option(help="Port of the embedded NATS.")] = 4223,
    port_base: Annotated[
        int | None, typer.Option(help="First HTTP port (default 8001..8004).")
    ] = None,
    traces: Annotated[
        bool,
        typer.Option(
            "--traces",
            help="Also run the local trace store (Phoenix, web UI on :6006) and export every "
            "service's spans to it; `cityhall trace <id>` prints one.",
        ),
    ] = False,
) -> None:
    """Start the whole platform: embedded NATS and PostgreSQL (unless NATS_URL / DATABASE_URL
    are set) and the four services. Ctrl-C stops everything; data is kept."""
    from cityhall.stack import StackConfig, run_stack

    config = StackConfig(
        home=Path(_env("CITYHALL_HOME") or home).resolve(),
        nats_url=_env("NATS_URL"),
        database_url=_env("DATABASE_URL"),
        nats_port=int(_env("CITYHALL_NATS_PORT") or nats_port),
        port_base=int(p) if (p := _env("CITYHALL_PORT_BASE")) else port_base,
        namespace=_env("CITYHALL_NAMESPACE") or "cityhall",
        sync_interval=_env("CITYHALL_NATS_SYNC_INTERVAL") or "2m",
        traces=traces,
    )
    raise typer.Exit(run_stack(config))


def _known_service(service: str) -> None:
    from services.registry import SERVICE_NAMES

    if service not in SERVICE_NAMES:
        typer.echo(
            f"unknown service {service!r}; choose one of {', '.join(SERVICE_NAMES)}",
            err=True,
        )
        raise typer.Exit(2)


@app.command()
def serve(
    service: Annotated[
        str, typer.Argument(help="applications, payments, notifications or reporting")
    ],
) -> None:
    """Run one service alone (what a container runs), configured from the environment."""
    from services.registry import definition
    from services.runtime.server import serve as serve_service
    from services.runtime.settings import load_settings

    _known_service(service)
    serve_service(definition(service), load_settings(service))


@app.command()
def relay(
    service: Annotated[
        str, typer.Argument(help="applications, payments, notifications or reporting")
    ],
) -> None:
    """Run a service's outbox relay alone: it publishes what the service's processes write to
    their outbox (and checks the streams kept it). For a service whose `serve` processes run
    with OUTBOX_RELAY=false, so publishing takes no time from their consumers and requests.
    Serves /healthz and /readyz (with the outbox backlog) on HTTP_PORT; configured from the
    environment as `serve` is."""
    from services.registry import definition
    from services.runtime.server import serve as serve_service
    from services.runtime.settings import load_settings

    _known_service(service)
    serve_service(definition(service), load_settings(service), role="relay")


@app.command()
def migrate(
    services: Annotated[list[str] | None, typer.Argument(help="Default: all four.")] = None,
) -> None:
    """Create each service's schema and apply its migrations, then exit (a Kubernetes Job)."""
    from services.registry import SERVICE_NAMES, definition
    from services.runtime.service import prepare_database
    from services.runtime.settings import load_settings

    for name in services or SERVICE_NAMES:
        settings = load_settings(name)
        applied = asyncio.run(prepare_database(settings, definition(name)))
        typer.echo(f"{name}: schema {settings.schema_name}: {len(applied)} migration(s) applied")
        for m in applied:
            typer.echo(f"  {m}")


@app.command("provision")
def provision(
    replicas: Annotated[
        int | None,
        typer.Option(
            min=1, max=5, help="Stream replicas (default STREAM_REPLICAS, else 1; 3 on a cluster)."
        ),
    ] = None,
) -> None:
    """Create or update every JetStream stream and every service's durable consumer, as the
    operator (NATS_URL, NATS_NKEY_FILE). Run before the services start; they may not."""
    from cityhall.provision import provision_all
    from contracts.subjects import DEFAULT_NAMESPACE

    ns = _env("CITYHALL_NAMESPACE") or DEFAULT_NAMESPACE
    replicas = replicas or int(_env("STREAM_REPLICAS") or 1)
    done = asyncio.run(provision_all(_nats_url(), ns, _operator_seed(), replicas))
    for line in done:
        typer.echo(f"{line}: ready")


def _nats_url() -> str:
    return _env("NATS_URL") or "nats://127.0.0.1:4223"


def _operator_seed() -> Path | None:
    """The operator's nkey seed file (NATS_NKEY_FILE; `cityhall up` names it in operator.env)."""
    value = _env("NATS_NKEY_FILE")
    return Path(value) if value else None


async def _operator_nats() -> Any:
    from cityhall.provision import operator_connection

    return await operator_connection(_nats_url(), _operator_seed())


@nats_app.command("keys")
def nats_keys(
    keys: Annotated[Path, typer.Argument(help="A folder only the operator can read.")],
) -> None:
    """Make the nkey seed of each service and of the operator that is missing in KEYS (one
    file each, 0600) and print the public keys. Each service's seed becomes its
    `<service>-nats` secret (key `seed`); the seeds never leave the operator's hands otherwise."""
    from cityhall.natsauth import OPERATOR, KeyDirectory
    from services.registry import SERVICE_NAMES

    for name, key in KeyDirectory(keys).ensure([*SERVICE_NAMES, OPERATOR]).items():
        typer.echo(f"{name}\t{key}")


@nats_app.command("users")
def nats_users(
    keys: Annotated[Path, typer.Option(help="The folder of `cityhall nats keys`.")],
    out: Annotated[Path | None, typer.Option(help="Write here (0600) instead of printing.")] = None,
) -> None:
    """Render the server's `authorization` block: the services, the operator and every
    terminal with a key in force (read from payments' database, PAYMENTS_DATABASE_URL or
    DATABASE_URL). Public keys only: the file holds no secret. On a cluster it is the
    `cityhall-nats-auth` ConfigMap's auth.conf (docs/deploy.md)."""
    from cityhall.files import write_private
    from cityhall.natsauth import KeyDirectory, authorization_config, bus_users

    ns = _env("CITYHALL_NAMESPACE") or "cityhall"
    database = _env("PAYMENTS_DATABASE_URL") or _env("DATABASE_URL")
    if database is None:
        typer.echo("no PAYMENTS_DATABASE_URL: the users will include no terminal", err=True)
    text = authorization_config(
        bus_users(KeyDirectory(keys), ns, {"payments": database} if database else {})
    )
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_private(out, text)
        typer.echo(str(out))


@dlq_app.command("list")
def dlq_list(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's dead letters.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the newest dead letters: when, which consumer, why, and the original message."""
    from contracts.subjects import DEFAULT_NAMESPACE
    from services.runtime.dlq import list_dead_letters

    async def run() -> list:  # type: ignore[type-arg]
        nc = await _operator_nats()
        try:
            ns = _env("CITYHALL_NAMESPACE") or DEFAULT_NAMESPACE
            return await list_dead_letters(nc.jetstream(), ns, limit=limit, consumer=consumer)
        finally:
            await nc.close()

    letters = asyncio.run(run())
    if as_json:
        for d in letters:
            typer.echo(json.dumps(_letter_json(d), ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dead letters ({len(letters)})", title_justify="left")
    for col in (
        "seq",
        "dead at",
        "consumer",
        "subject",
        "deliveries",
        "reason",
        "body",
    ):
        table.add_column(col, overflow="fold")
    for d in letters:
        body = d.body.decode(errors="replace")
        table.add_row(
            str(d.dlq_seq),
            d.dead_at,
            d.consumer,
            d.subject,
            str(d.deliveries),
            d.reason,
            body if len(body) <= 120 else body[:119] + "…",
        )
    Console().print(table)


def _letter_json(d: Any) -> dict[str, Any]:
    return {
        "dlq_seq": d.dlq_seq,
        "dead_at": d.dead_at,
        "consumer": d.consumer,
        "reason": d.reason,
        "subject": d.subject,
        "stream": d.stream,
        "stream_seq": d.stream_seq,
        "deliveries": d.deliveries,
        "headers": dict(d.headers),
        "body": d.body.decode(errors="replace"),
    }


@dlq_app.command("show")
def dlq_show(
    seq: Annotated[int, typer.Argument(help="The dead letter's DLQ sequence (see `dlq list`).")],
) -> None:
    """One dead letter in full: why, where it came from, its headers and its whole body."""
    from contracts.subjects import DEFAULT_NAMESPACE, DLQ
    from services.runtime.dlq import DeadLetter

    async def run() -> DeadLetter | None:
        from nats.js.errors import NotFoundError

        nc = await _operator_nats()
        try:
            ns = _env("CITYHALL_NAMESPACE") or DEFAULT_NAMESPACE
            try:
                raw = await nc.jetstream().get_msg(DLQ.stream_name(ns), seq=seq, direct=True)
            except NotFoundError:
                return None
            return DeadLetter.from_message(seq, raw.headers or {}, raw.data or b"")
        finally:
            await nc.close()

    letter = asyncio.run(run())
    if letter is None:
        typer.echo(f"no dead letter has the sequence {seq}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(_letter_json(letter), ensure_ascii=False, indent=2))


@dlq_app.command("replay")
def dlq_replay(
    seq: Annotated[
        list[int] | None, typer.Option("--seq", help="DLQ sequence(s) to replay (see `dlq list`).")
    ] = None,
    consumer: Annotated[
        str | None, typer.Option(help="Replay every dead letter of this consumer.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 10_000,
) -> None:
    """Re-drive dead letters after a fix: each goes back on its original subject and leaves
    the DLQ; consumers that already applied the event drop the copy (inbox)."""
    from contracts.subjects import DEFAULT_NAMESPACE
    from services.runtime.dlq import list_dead_letters, replay_dead_letters

    if not seq and not consumer:
        typer.echo("say which: --seq N (repeatable) or --consumer NAME", err=True)
        raise typer.Exit(2)

    async def run() -> list[int]:
        nc = await _operator_nats()
        try:
            ns = _env("CITYHALL_NAMESPACE") or DEFAULT_NAMESPACE
            js = nc.jetstream()
            letters = await list_dead_letters(js, ns, limit=limit, consumer=consumer)
            if seq:
                wanted = set(seq)
                missing = wanted - {d.dlq_seq for d in letters}
                if missing:
                    typer.echo(f"no such dead letter: {sorted(missing)}", err=True)
                    raise typer.Exit(1)
                letters = [d for d in letters if d.dlq_seq in wanted]
            return await replay_dead_letters(js, ns, letters)
        finally:
            await nc.close()

    replayed = asyncio.run(run())
    typer.echo(f"replayed {len(replayed)} dead letter(s): {replayed}")


@outbox_app.command("reconcile")
def outbox_reconcile(
    services: Annotated[list[str] | None, typer.Argument(help="Default: all four.")] = None,
    grace_s: Annotated[
        float, typer.Option(min=0, help="Look up only rows published at least this long ago.")
    ] = 300.0,
) -> None:
    """Check now that the streams still hold every event each service published (rows are
    kept OUTBOX_RETENTION_HOURS) and queue the lost ones to publish again; the running
    service's relay sends them. The services also do this every OUTBOX_RECONCILE_INTERVAL_S;
    run it by hand after restoring NATS from a backup, for instance."""
    from services.registry import SERVICE_NAMES
    from services.runtime import db as rdb
    from services.runtime.reconcile import OutboxReconciler, ReconcileReport
    from services.runtime.settings import ServiceSettings, load_settings
    from services.runtime.streams import subject_streams

    async def run(settings: ServiceSettings) -> ReconcileReport:
        nc = await _operator_nats()
        pool = await rdb.create_pool(settings.dsn, settings.schema_name, min_size=1, max_size=2)
        try:
            reconciler = OutboxReconciler(
                pool, settings.schema_name, nc, subject_streams(settings.namespace), grace_s=grace_s
            )
            return await reconciler.reconcile()
        finally:
            await pool.close()
            await nc.close()

    for name in services or SERVICE_NAMES:
        settings = load_settings(name)
        report = asyncio.run(run(settings))
        if report.skipped:
            typer.echo(f"{name}: skipped, another reconciler is running on {settings.schema_name}")
            continue
        typer.echo(
            f"{name}: {report.checked_one_by_one} looked up one by one, "
            f"{report.checked_against_state} checked against the streams' state; "
            f"{len(report.lost)} lost, queued to publish again; "
            f"verified through outbox row {report.verified_through}"
        )
        for event_id in report.lost:
            typer.echo(f"  lost: {event_id}")


@contracts_app.command("export")
def contracts_export(
    check: Annotated[bool, typer.Option(help="Only report stale files; exit 1 if any.")] = False,
) -> None:
    """Write contracts/schemas/*.json and contracts/asyncapi.json from the code."""
    import contracts
    from cityhall import export

    root = Path(contracts.__file__).parent
    if check:
        stale = export.check(root)
        for name in stale:
            typer.echo(f"stale: {name}")
        raise typer.Exit(1 if stale else 0)
    for path in export.export(root):
        typer.echo(f"wrote {path}")


@app.command("applicant-token")
def applicant_token(
    applicant_id: Annotated[str, typer.Argument(help="The citizen's account id (a UUID).")],
    lifetime: Annotated[int, typer.Option(help="Seconds until it expires.")] = 3600,
) -> None:
    """Print an applicant token, as the city's login gateway would sign it, for `cityhall up`
    (its secret: APPLICANT_JWT_SECRET, else <home>/applicant-jwt.secret)."""
    import uuid

    from services.runtime.auth import ApplicantTokenSettings, mint_applicant_token

    try:
        account = uuid.UUID(applicant_id)
    except ValueError:
        typer.echo(f"not an account id (UUID): {applicant_id!r}", err=True)
        raise typer.Exit(2) from None
    settings = ApplicantTokenSettings()
    secret = settings.secret.get_secret_value() if settings.secret else None
    path = Path(_env("CITYHALL_HOME") or ".cityhall") / "applicant-jwt.secret"
    if secret is None and path.is_file():
        secret = path.read_text().strip()
    if secret is None:
        typer.echo(f"no APPLICANT_JWT_SECRET and no {path}: run `cityhall up` first", err=True)
        raise typer.Exit(1)
    typer.echo(
        mint_applicant_token(
            account,
            secret,
            issuer=settings.issuer,
            audience=settings.audience,
            lifetime_s=lifetime,
        )
    )


def _add_service_commands() -> None:
    """Each service's own commands (``register(app)``): catalog, terminals, mail, reporting;
    and `trace`."""
    from cityhall.commands import applications, notifications, payments, reporting, traces

    for module in (applications, payments, notifications, reporting, traces):
        module.register(app)


_add_service_commands()


def main() -> None:
    _load_operator_env()
    app()
