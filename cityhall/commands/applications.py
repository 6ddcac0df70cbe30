"""`cityhall catalog ...`: the procedure catalog from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

catalog_app = typer.Typer(help="The procedure catalog (手続き一覧).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")


@catalog_app.command("import")
def import_catalog(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV or JSON catalog (columns: see services/applications/catalog).",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only check the rows; change nothing.")
    ] = False,
) -> None:
    """Import procedures: new ones are registered, changed ones updated (and onlined), each
    change announced as an event; rows that do not fit are listed with the reason."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from services.applications import catalog
    from services.applications.handlers.catalog_import import ImportReport, import_procedures
    from services.registry import definition
    from services.runtime import db
    from services.runtime.service import prepare_database
    from services.runtime.settings import load_settings

    console = Console(stderr=True)
    try:
        parsed = catalog.parse_rows(catalog.read_rows(file))
    except catalog.CatalogFileError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc

    report = ImportReport()
    if not dry_run and parsed.procedures:
        settings = load_settings("applications")

        async def run() -> ImportReport:
            await prepare_database(settings, definition("applications"))
            pool = await db.create_pool(settings.dsn, settings.schema_name, max_size=2)
            try:
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as progress:
                    task = progress.add_task(f"importing {file.name}", total=len(parsed.procedures))
                    return await import_procedures(
                        pool,
                        parsed.procedures,
                        progress=lambda n: progress.advance(task, n),
                    )
            finally:
                await pool.close()

        report = asyncio.run(run())

    if parsed.rejected:
        table = Table(title=f"{len(parsed.rejected)} rejected row(s)", show_lines=False)
        table.add_column("row", justify="right")
        table.add_column("code")
        table.add_column("reason")
        for r in parsed.rejected:
            table.add_row(str(r.row), r.code or "", r.reason)
        console.print(table)
    verb = "checked" if dry_run else "imported"
    typer.echo(
        f"{verb} {len(parsed.procedures)} procedure(s): {report.registered} registered, "
        f"{report.updated} updated, {report.onlined} onlined, {report.unchanged} unchanged; "
        f"{len(parsed.rejected)} rejected"
        + (f"; {report.announced} earlier procedure(s) announced" if report.announced else "")
    )
    if parsed.rejected:
        raise typer.Exit(1)
