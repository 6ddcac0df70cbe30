"""`cityhall reporting ...`: operator commands of the reporting service."""

from __future__ import annotations

import asyncio

import typer

reporting_app = typer.Typer(
    help="Reporting: KPI read-models (rebuild from the event log).", no_args_is_help=True
)


@reporting_app.command("rebuild")
def rebuild_command() -> None:
    """Replay the streams from the beginning into fresh tables and swap them in atomically.

    Configured like `cityhall serve reporting` (NATS_URL, DATABASE_URL or
    REPORTING_DATABASE_URL, CITYHALL_NAMESPACE). The running service may keep running.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TimeElapsedColumn,
    )

    from services.reporting.rebuild import rebuild
    from services.runtime.settings import load_settings

    settings = load_settings("reporting")
    console = Console()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, TaskID] = {}
        done_by: dict[str, int] = {}

        def on_start(pending: dict[str, int]) -> None:
            for name, total in pending.items():
                tasks[name] = bar.add_task(f"replaying {name}", total=total)

        def progress(name: str, done: int, total: int) -> None:
            # events published during the rebuild are replayed too: the total may grow
            done_by[name] = done_by.get(name, 0) + done
            bar.update(tasks[name], completed=done_by[name], total=max(total, done_by[name]))

        report = asyncio.run(rebuild(settings, progress=progress, on_start=on_start))
    for name, applied in report.applied.items():
        console.print(f"{name}: {applied} events applied")
    if report.skipped_invalid:
        console.print(f"{report.skipped_invalid} invalid events skipped (see `cityhall dlq list`)")
    for failure in report.failed:
        console.print(f"[red]projection failed[/red] {failure}")
    console.print(f"schema {settings.schema_name}: read-models swapped in")
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(reporting_app, name="reporting")
