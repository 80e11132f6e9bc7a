"""The ``driftloop`` command line (Typer). The entry point: settings and logging are set up here.

Exit codes, so cron and CI can act on them: 0 ok, 1 error, 2 usage error,
3 breach (a monitor verdict that pages), 4 warn.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from driftloop.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BREACH = 3
EXIT_WARN = 4

app = typer.Typer(
    name="driftloop",
    help="Keep a text classifier healthy in production: monitor, alert, approve, retrain, promote.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
log = logging.getLogger("driftloop")


def _configure_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "alembic", "mlflow", "prefect", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML file (default ./driftloop.toml).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Build the settings once and hand them to the command."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _configure_logging(verbose)
    try:
        ctx.obj = load_settings(config)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the working directory and the prediction-log schema."""
    from monitor.errors import StoreError
    from monitor.store import open_store

    settings = _settings(ctx)
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        store = open_store(settings.store, labels=settings.model.labels, create=True)
    except StoreError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    console.print(f"prediction log ready at [bold]{store.safe_url}[/bold]")


@app.command()
def ingest(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet file.", exists=True)],
    kind: Annotated[str, typer.Option(help="'predictions' or 'labels'.")] = "predictions",
) -> None:
    """Load predictions or labels from a file; bad rows go to quarantine with their reason."""
    from monitor.errors import StoreError
    from monitor.store import open_store

    settings = _settings(ctx)
    try:
        store = open_store(settings.store, labels=settings.model.labels, create=True)
        result = store.ingest_file(file, kind=kind)
    except StoreError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    table = Table(title=f"ingest {file.name} ({kind})")
    for column in ("offered", "stored", "duplicate", "quarantined"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.offered), str(result.stored), str(result.duplicate), str(result.quarantined)
    )
    console.print(table)
    for reason, count in sorted(result.reasons.items()):
        console.print(f"  quarantined: {count} x {reason}")


@app.command()
def simulate(
    ctx: typer.Context,
    days: Annotated[int | None, typer.Option(help="Simulated days (default from settings).")] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model directory (default: the registry champion).")
    ] = None,
) -> None:
    """Replay the demo data as production traffic, with a topic shift and delayed labels."""
    from driftloop.simulate import simulate_traffic

    from monitor.errors import StoreError
    from monitor.store import open_store

    settings = _settings(ctx)
    try:
        store = open_store(settings.store, labels=settings.model.labels, create=True)
        summary = simulate_traffic(settings, store, model_dir=model, days=days)
    except StoreError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    console.print(summary.as_table())


@app.command()
def demo(ctx: typer.Context) -> None:
    """The end-to-end story on embedded defaults (what ``make run`` runs)."""
    from flows.demo import run_demo

    raise typer.Exit(run_demo(_settings(ctx), console))


if __name__ == "__main__":
    app()
