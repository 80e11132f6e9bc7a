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


#: driftloop's own top-level packages: their loggers speak at INFO (DEBUG with -v).
OWN_LOGGERS = ("driftloop", "monitor", "retrain", "flows", "bench")
#: Environment set before any third-party import (only where the user has not set it).
THIRD_PARTY_ENV = {
    # The "Some weights ... newly initialized" warning of every base-model load.
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    # datasets' tqdm bars of Dataset.map (training shows its own rich bar).
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # MLflow logs through its own handler ("Creating initial MLflow database tables...") and
    # draws a tqdm bar for every artifact download.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # The ephemeral Prefect server would try (and, offline, fail loudly) to send telemetry.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The ephemeral Prefect server gets 20 s to start by default. On 2 cores its first start
    # (creating ~/.prefect/prefect.db) took 31 s and failed the first `make run` of a new user.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


class OwnLoggersOnly(logging.Filter):
    """Console filter: below WARNING only driftloop's own loggers get through.

    Third-party loggers that set their own level to INFO (Prefect's flow and task run
    loggers) still reach their other handlers (the Prefect API), just not the console.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """True when the record is shown."""
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


def _configure_logging(verbose: bool) -> None:
    """Own loggers at INFO (DEBUG with ``verbose``), every third-party one at WARNING."""
    from rich.logging import RichHandler

    for key, value in THIRD_PARTY_ENV.items():
        os.environ.setdefault(key, value)
    handler = RichHandler(console=Console(stderr=True), show_path=False)
    if not verbose:
        handler.addFilter(OwnLoggersOnly())
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
        force=True,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


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
    days: Annotated[
        int | None, typer.Option(help="Simulated days (default from settings).")
    ] = None,
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


def _fail(exc: BaseException) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(EXIT_ERROR)


@app.command()
def bootstrap(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option(help="Register a new champion even if one exists.")
    ] = False,
    epochs: Annotated[float | None, typer.Option(help="Override retrain.epochs.")] = None,
) -> None:
    """Fine-tune the base model on the reference domain and register it as the champion."""
    from retrain.bootstrap import bootstrap as run_bootstrap

    settings = _settings(ctx)
    try:
        result = run_bootstrap(settings, epochs=epochs, force=force)
    except Exception as exc:
        raise _fail(exc) from exc
    console.print(
        f"champion: version [bold]{result.version}[/bold] "
        f"(reference accuracy {result.reference_accuracy:.3f}, {result.seconds:.0f}s)"
    )


@app.command()
def monitor(
    ctx: typer.Context,
    hours: Annotated[float, typer.Option(help="Window length ending now.")] = 24.0,
    no_retrain: Annotated[bool, typer.Option(help="Do not start a retrain on a breach.")] = False,
) -> None:
    """Run one monitoring pass. Exit code 3 on breach, 4 on warn, 0 ok, 1 error."""
    from flows.monitor_flow import monitor_flow
    from flows.wiring import settings_overrides

    settings = _settings(ctx)
    try:
        outcome = monitor_flow(
            window_hours=hours,
            overrides=settings_overrides(settings),
            trigger_retrain=not no_retrain,
        )
    except Exception as exc:
        raise _fail(exc) from exc
    _print_outcome(outcome)
    raise typer.Exit(_exit_code(outcome["status"]))


def _exit_code(status: str) -> int:
    return {"ok": EXIT_OK, "breach": EXIT_BREACH, "warn": EXIT_WARN}.get(status, EXIT_OK)


def _print_outcome(outcome: dict[str, object]) -> None:
    colour = {"ok": "green", "warn": "yellow", "breach": "red"}.get(str(outcome["status"]), "white")
    table = Table(title=f"verdict: [{colour}]{outcome['status']}[/{colour}]")
    for column in ("check", "decision", "p-value", "adjusted p"):
        table.add_column(column)
    verdict = outcome.get("verdict") or {}
    assert isinstance(verdict, dict)
    for check in verdict.get("checks", []):
        table.add_row(
            check["name"],
            check["decision"],
            _num(check.get("p_value")),
            _num(check.get("adjusted_p_value")),
        )
    console.print(table)
    for key in ("report_html", "report_json", "incident_key", "paged", "retrain"):
        if outcome.get(key):
            console.print(f"  {key}: {outcome[key]}")


def _num(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else ("-" if value is None else str(value))


@app.command()
def retrain(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by", help="Who approves this retrain.")],
    reason: Annotated[str, typer.Option(help="Why.")],
    incident: Annotated[
        str | None, typer.Option(help="The open incident this retrain answers.")
    ] = None,
) -> None:
    """Retrain now, approved by the person running it (fine-tune, gate, promote if it passes)."""
    from flows.retrain_flow import retrain_flow
    from flows.wiring import settings_overrides

    settings = _settings(ctx)
    try:
        result = retrain_flow(
            incident_key=incident,
            overrides=settings_overrides(settings),
            approver=by,
            reason=reason,
        )
    except Exception as exc:
        raise _fail(exc) from exc
    console.print(f"retrain: [bold]{result['status']}[/bold]")
    for key, value in result.items():
        if key != "status" and isinstance(value, str | int | float):
            console.print(f"  {key}: {value}")
    if result["status"] not in ("promoted", "refused"):
        raise typer.Exit(EXIT_ERROR)


@app.command()
def approve(
    ctx: typer.Context,
    flow_run_id: Annotated[str, typer.Argument(help="The paused retrain flow run.")],
    by: Annotated[str, typer.Option("--by", help="Your name (recorded on the model version).")],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    reject: Annotated[bool, typer.Option(help="Reject instead of approve.")] = False,
) -> None:
    """Approve (or --reject) a paused retrain: sends the approval form as the run's input."""
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    if reject and not reason:
        console.print("[red]error:[/red] --reject needs --reason")
        raise typer.Exit(EXIT_USAGE)
    try:
        resume_flow_run(
            UUID(flow_run_id),
            run_input={"approve": not reject, "approver": by, "reason": reason},
        )
    except Exception as exc:
        raise _fail(exc) from exc
    verb = "rejected" if reject else "approved"
    console.print(f"retrain flow run {flow_run_id} {verb} by {by}")


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Registered version to make champion.")],
    by: Annotated[str, typer.Option("--by")],
    reason: Annotated[str, typer.Option()],
) -> None:
    """Make a registered version the champion (manual override of the gate)."""
    from retrain.registry import Registry

    settings = _settings(ctx)
    try:
        info = Registry(settings.registry).promote(
            version, approver=by, reason=reason, labels=settings.model.labels
        )
    except Exception as exc:
        raise _fail(exc) from exc
    console.print(f"champion is now version [bold]{info.version}[/bold]")


@app.command()
def rollback(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by")],
    reason: Annotated[str, typer.Option()],
) -> None:
    """Make the previous champion the champion again."""
    from retrain.registry import Registry

    settings = _settings(ctx)
    try:
        info = Registry(settings.registry).rollback(
            by=by, reason=reason, labels=settings.model.labels
        )
    except Exception as exc:
        raise _fail(exc) from exc
    console.print(f"rolled back: champion is version [bold]{info.version}[/bold]")


@app.command()
def status(ctx: typer.Context) -> None:
    """Champion version, last verdicts, open incidents, pending approvals."""
    from flows.wiring import open_store_and_state

    settings = _settings(ctx)
    try:
        from retrain.registry import Registry

        champion = Registry(settings.registry).champion()
        console.print(
            f"champion: {settings.registry.model_name} version "
            f"[bold]{champion.version if champion else 'none'}[/bold]"
        )
    except Exception as exc:
        console.print(f"champion: unknown ({exc})")
    try:
        _, state = open_store_and_state(settings)
    except Exception as exc:
        raise _fail(exc) from exc
    runs = Table(title="last verdicts")
    for column in ("at (UTC)", "version", "status", "breached", "report"):
        runs.add_column(column)
    for run in state.recent_monitor_runs(10):
        runs.add_row(
            f"{run['at']:%Y-%m-%d %H:%M}",
            str(run["model_version"]),
            run["status"],
            run["breached"] or "-",
            run["report_html"] or "-",
        )
    console.print(runs)
    incidents = Table(title="open incidents")
    for column in ("key", "opened", "pages", "approval", "retrain run", "delivery error"):
        incidents.add_column(column)
    for inc in state.open_incidents():
        incidents.add_row(
            inc.key,
            f"{inc.opened_at:%Y-%m-%d %H:%M}",
            str(inc.notify_count),
            inc.approval,
            inc.retrain_flow_run_id or "-",
            inc.last_delivery_error or "-",
        )
    console.print(incidents)
    for inc in state.pending_approvals():
        if inc.retrain_flow_run_id:
            console.print(
                f"pending approval: driftloop approve {inc.retrain_flow_run_id} --by NAME"
            )


@app.command()
def serve(
    ctx: typer.Context,
    cron: Annotated[str, typer.Option(help="Monitoring schedule (cron).")] = "0 * * * *",
) -> None:
    """Run both flows on their schedules in this process (embedded setup)."""
    from prefect import serve as prefect_serve

    from flows.monitor_flow import monitor_flow
    from flows.retrain_flow import retrain_flow
    from flows.wiring import settings_overrides

    settings = _settings(ctx)
    overrides = settings_overrides(settings)
    monitor_dep = monitor_flow.to_deployment(
        name="monitor", cron=cron, parameters={"overrides": overrides}
    )
    retrain_dep = retrain_flow.to_deployment(name="retrain", parameters={"overrides": overrides})
    console.print(f"serving monitor ({cron}) and retrain (on demand); Ctrl-C stops")
    prefect_serve(monitor_dep, retrain_dep)


@app.command()
def demo(ctx: typer.Context) -> None:
    """The end-to-end story on embedded defaults (what ``make run`` runs)."""
    from flows.demo import run_demo

    if not ctx.find_root().params.get("verbose"):
        # The demo tells its story on screen; our INFO logs would repeat it (-v shows them).
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        code = run_demo(_settings(ctx), console)
    except Exception as exc:
        log.debug("the demo failed", exc_info=True)
        raise _fail(exc) from exc
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
