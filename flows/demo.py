"""The end-to-end story of ``make run`` on embedded defaults.

SQLite prediction log and MLflow under ``settings.home``, Prefect's ephemeral local API and
the outbox file for alerts. Steps: bootstrap the champion if there is none, simulate
production days with a topic shift, run the monitor flow on each simulated day, page on the
breach, approve automatically (said on screen), retrain, gate, promote, and show the next
runs. Re-runnable: an existing champion and already-logged traffic are reused.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from driftloop.settings import Settings

log = logging.getLogger(__name__)


def _auto_approving(settings: Settings) -> Settings:
    retrain = settings.retrain.model_copy(update={"auto_approve": True})
    return settings.model_copy(update={"retrain": retrain})


def run_demo(settings: Settings, console: Console) -> int:
    """Run the demo; returns the process exit code (0 when every built step succeeded)."""
    started = time.perf_counter()
    settings = _auto_approving(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    not_built: list[str] = []
    console.print(
        Panel(
            "driftloop demo: embedded setup (SQLite log, MLflow on SQLite, Prefect ephemeral "
            f"API, alerts to {settings.alerts.outbox}).\n"
            "[bold yellow]Retrain approval is AUTOMATIC in this demo "
            "(retrain.auto_approve=true); in production a human approves with "
            "`driftloop approve <flow-run-id> --by NAME`.[/bold yellow]",
            title="driftloop",
        )
    )

    # 1. The champion.
    try:
        from retrain.bootstrap import bootstrap
        from retrain.registry import Registry
    except ImportError as exc:
        console.print(f"[red]not built yet:[/red] champion bootstrap ({exc})")
        return 1
    registry = Registry(settings.registry)
    champion = registry.champion()
    if champion is None:
        console.print("[bold]1. bootstrap[/bold]: fine-tuning the base model (first run only)")
        result = bootstrap(settings, progress=True)
        console.print(
            f"   champion version {result.version}, reference accuracy "
            f"{result.reference_accuracy:.3f} ({result.seconds:.0f}s)"
        )
    else:
        console.print(f"[bold]1. bootstrap[/bold]: champion version {champion.version} exists")

    # 2. Production traffic.
    from driftloop.simulate import simulate_traffic
    from flows.wiring import open_store_and_state, settings_overrides

    store, state = open_store_and_state(settings)
    console.print(
        f"[bold]2. simulate[/bold]: {settings.demo.days} days x {settings.demo.rows_per_day} "
        f"predictions, topic shift from day {settings.demo.shift_start_day}"
    )
    model, tokenizer, info = registry.load_champion(settings.model.labels)
    summary = simulate_traffic(
        settings,
        store,
        model=model,
        tokenizer=tokenizer,
        model_name=settings.registry.model_name,
        model_version=str(info.version),
        progress=True,
    )
    console.print(summary.as_table())

    # 3. One monitor run per simulated day.
    from flows.monitor_flow import monitor_flow

    overrides = settings_overrides(settings)
    rows: list[dict[str, Any]] = []
    outbox_before = _outbox_lines(settings)
    for day in summary.days:
        day_start = summary.start + timedelta(days=day.day)
        console.print(f"[bold]3. monitor[/bold] day {day.day} ({day.date})")
        outcome = monitor_flow(
            window_start=day_start,
            window_end=day_start + timedelta(days=1),
            overrides=overrides,
        )
        not_built.extend(n for n in outcome.get("not_built", []) if n not in not_built)
        rows.append({"day": day.day, "shifted": day.shifted, **outcome})
        _show_day(console, outcome)

    # 4. Alerts that went out.
    new_alerts = _outbox_lines(settings)[len(outbox_before) :]
    if new_alerts:
        console.print(f"[bold]4. alerts[/bold] written to {settings.alerts.outbox}:")
        for line in new_alerts:
            msg = json.loads(line)
            console.print(f"   [{msg['kind']}] {msg['title']}")
            if msg.get("approve_command"):
                console.print(f"      approve: {msg['approve_command']}")

    # 5. Summary.
    table = Table(title="driftloop demo summary")
    for column in ("day", "shifted", "model", "verdict", "breached", "paged", "retrain"):
        table.add_column(column)
    for row in rows:
        retrain = row.get("retrain") or {}
        table.add_row(
            str(row["day"]),
            str(row["shifted"]),
            f"v{row['model_version']}",
            row["status"],
            ", ".join(row["breached"]) or "-",
            row.get("paged") or "-",
            f"{retrain.get('status', '-')}"
            + (f" -> v{retrain['version']}" if retrain.get("version") else ""),
        )
    console.print(table)
    console.print("reports:")
    for row in rows:
        console.print(f"   day {row['day']}: {row.get('report_html') or row.get('report_json')}")
    champion = registry.champion()
    console.print(
        f"champion now: version {champion.version if champion else 'none'}; "
        f"open incidents: {len(state.open_incidents())}; "
        f"demo took {time.perf_counter() - started:.0f}s"
    )
    if not_built:
        console.print(f"[yellow]not built yet:[/yellow] {', '.join(not_built)}")
    return 0


def _outbox_lines(settings: Settings) -> list[str]:
    path = settings.alerts.outbox
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _show_day(console: Console, outcome: dict[str, Any]) -> None:
    colour = {"ok": "green", "warn": "yellow", "breach": "red"}.get(outcome["status"], "white")
    console.print(
        f"   verdict [{colour}]{outcome['status']}[/{colour}] "
        f"(breached: {', '.join(outcome['breached']) or '-'}; rows {outcome['rows']})"
    )
    if outcome.get("incident_key"):
        console.print(
            f"   incident {outcome['incident_key']} "
            f"({'opened' if outcome.get('incident_created') else 'still open'}, "
            f"paged: {outcome.get('paged') or 'no (cooldown)'})"
        )
    retrain = outcome.get("retrain")
    if retrain:
        console.print(
            f"   retrain: {retrain.get('status')} (approver: {retrain.get('approver', '-')})"
        )
    for key in outcome.get("resolved", []):
        console.print(f"   [green]resolved[/green] incident {key}")
