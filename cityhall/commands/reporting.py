"""`cityhall reporting ...`: operator commands of the reporting service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

from services.reporting import demo
from services.reporting.domain import tokyo_day
from services.reporting.rebuild import RebuildError, RebuildReport, rebuild
from services.reporting.settings import DemoSettings
from services.runtime.settings import load_settings

reporting_app = typer.Typer(
    help="Reporting: KPI read-models (rebuild from the event log).", no_args_is_help=True
)


@reporting_app.command("rebuild")
def rebuild_command() -> None:
    """Replay the streams from the beginning into fresh tables and swap them in atomically.

    Configured like `cityhall serve reporting` (NATS_URL, DATABASE_URL or
    REPORTING_DATABASE_URL, CITYHALL_NAMESPACE). The running service may keep running.
    """
    settings = load_settings("reporting")
    console = Console()
    with _progress_bar(console) as bar:
        tasks: dict[str, TaskID] = {}
        done_by: dict[str, int] = {}

        def on_start(pending: dict[str, int]) -> None:
            for name, total in pending.items():
                tasks[name] = bar.add_task(f"replaying {name}", total=total)

        def progress(name: str, done: int, total: int) -> None:
            # events published during the rebuild are replayed too: the total may grow
            done_by[name] = done_by.get(name, 0) + done
            bar.update(tasks[name], completed=done_by[name], total=max(total, done_by[name]))

        try:
            report = asyncio.run(rebuild(settings, progress=progress, on_start=on_start))
        except RebuildError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    _print_rebuild(console, report, settings.schema_name)
    if report.failed:
        raise typer.Exit(1)


def _print_rebuild(console: Console, report: RebuildReport, schema: str) -> None:
    for name, applied in report.applied.items():
        console.print(f"{name}: {applied} events applied")
    if report.skipped_invalid:
        console.print(f"{report.skipped_invalid} invalid events skipped (see `cityhall dlq list`)")
    for failure in report.failed:
        console.print(f"[red]projection failed[/red] {failure}")
    console.print(f"schema {schema}: read-models swapped in")


def _progress_bar(console: Console) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def demo_command(
    months: Annotated[int, typer.Option(min=1, max=36, help="Months of payments.")] = 6,
    payments_per_month: Annotated[
        int, typer.Option(min=1, max=100_000, help="Captures per month, all terminals.")
    ] = 400,
    applications: Annotated[
        int, typer.Option(min=0, max=100_000, help="Applications over HTTP (this month).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Same seed, same city.")] = 1,
) -> None:
    """Drive realistic traffic through the running services: terminals publish payments over
    NATS (each with its own credentials, from `cityhall terminals register`), citizens and
    staff apply over HTTP. Configured by NATS_URL, CITYHALL_NAMESPACE, CITYHALL_HOME and
    CITYHALL_APPLICATIONS_URL (defaults fit `cityhall up`)."""
    settings = DemoSettings()
    console = Console()
    try:
        terminals = demo.registered_terminals(settings.home.resolve())
    except demo.NoTerminals as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    today = tokyo_day(datetime.now(UTC))
    plan = list(demo.plan_transactions(terminals, months, payments_per_month, today, seed))
    with _progress_bar(console) as bar:
        sent, accepted, refused = asyncio.run(
            _drive(settings, bar, plan, len(terminals), applications, seed)
        )
    console.print(
        f"{sent} terminal transactions over {months} months; "
        f"{accepted} applications accepted, {refused} refused by the service"
    )


async def _drive(
    settings: DemoSettings,
    bar: Progress,
    plan: list[tuple[demo.Terminal, dict[str, Any]]],
    terminals: int,
    applications: int,
    seed: int,
) -> tuple[int, int, int]:
    """The terminals' payments over NATS, then the applications over HTTP, each with its bar."""
    pay = bar.add_task(f"terminals ({terminals}) publishing", total=len(plan))
    apply = bar.add_task("applications over HTTP", total=applications)
    sent = await demo.publish_payments(
        settings.nats_url, settings.namespace, plan, lambda n: bar.advance(pay, n)
    )
    home = settings.home.resolve()
    token_file = home / "applications" / "staff.token"
    staff_token = token_file.read_text().strip() if token_file.is_file() else None
    secret_file = home / "applicant-jwt.secret"
    secret = secret_file.read_text().strip() if secret_file.is_file() else None
    async with httpx.AsyncClient(base_url=settings.applications_url, timeout=10) as http:
        accepted, refused = await demo.submit_applications(
            http, applications, seed, lambda n: bar.advance(apply, n), staff_token, secret
        )
    return sent, accepted, refused


def register(app: typer.Typer) -> None:
    app.add_typer(reporting_app, name="reporting")
    app.command("demo")(demo_command)
