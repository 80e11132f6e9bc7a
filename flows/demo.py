"""The end-to-end story of ``make run``, one simulated production day at a time.

Everything lives in its own namespace, ``<settings.home>/demo/`` (prediction log and state,
MLflow store, model and embedding caches, outbox, reports), whatever store, registry or alert
URLs are configured: simulated traffic never reaches a production prediction log and nobody
is paged. Steps:

1. The champion: bootstrapped on the first run only. A later run re-points ``champion`` at the
   bootstrap version through the registry (no retraining) and reuses the caches.
2. The simulated traffic is reset, then for each day: the current champion serves the day's
   traffic (a ``demo.shift_fraction`` share from other topics from ``demo.shift_start_day``),
   the monitor flow judges the day (labels as of the day's end), and on a breach the on-call
   person is paged, the retrain is approved automatically (said on screen), trained on the
   breaching day's labelled rows plus replay, gated and promoted; the next days are served and
   monitored by the new champion, whose drift reference is the accepted new traffic.
3. A summary table, the alerts, and the paths of the reports.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from driftloop.settings import Settings

log = logging.getLogger(__name__)

DEMO_DIR = "demo"
DEMO_APPROVER = "driftloop demo"


def demo_settings(settings: Settings) -> Settings:
    """The demo's settings: every path under ``<home>/demo``, no alert URLs, auto-approval.

    The ``demo`` section (days, rows, shift, labels) and the thresholds are kept as configured.
    """
    home = settings.home / DEMO_DIR
    return settings.model_copy(
        update={
            "home": home,
            "store": settings.store.model_copy(update={"url": f"sqlite:///{home}/driftloop.db"}),
            "registry": settings.registry.model_copy(
                update={
                    "tracking_uri": f"sqlite:///{home}/mlflow.db",
                    "artifact_location": str(home / "mlartifacts"),
                }
            ),
            "alerts": settings.alerts.model_copy(
                update={"urls": (), "outbox": home / "outbox.jsonl"}
            ),
            "retrain": settings.retrain.model_copy(update={"auto_approve": True}),
        }
    )


def reset_traffic(settings: Settings) -> None:
    """Delete the demo's prediction log (with its incident state), outbox and reports.

    Only ever called on :func:`demo_settings` (a SQLite file under ``<home>/demo``).
    """
    url = settings.store.url
    if not url.startswith("sqlite:///") or DEMO_DIR not in Path(settings.home).parts:
        raise ValueError(f"refusing to reset a store outside the demo namespace: {url}")
    db = Path(url.removeprefix("sqlite:///"))
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
    settings.alerts.outbox.unlink(missing_ok=True)
    shutil.rmtree(settings.home / "reports", ignore_errors=True)


@dataclass
class DayResult:
    """One simulated day: what was served and what the monitor (and retrain) did."""

    day: int
    date: str
    shift: float
    served_by: str
    outcome: dict[str, Any]
    alerts: list[dict[str, Any]] = field(default_factory=list)


def _bootstrap_version(registry: Any) -> str | None:
    """The newest registered version trained by the bootstrap, if any."""
    versions = registry.client.search_model_versions(f"name='{registry.name}'")
    boot = [int(v.version) for v in versions if (v.tags or {}).get("kind") == "bootstrap"]
    return str(max(boot)) if boot else None


def _champion(settings: Settings, registry: Any, console: Console) -> str:
    """Step 1: bootstrap on the first run, else re-point ``champion`` at the bootstrap."""
    from retrain.bootstrap import bootstrap

    boot = _bootstrap_version(registry)
    if boot is None:
        console.print(
            "[bold]1. champion[/bold]: none yet, fine-tuning the base model on the airline "
            "reference domain (first run only)"
        )
        result = bootstrap(settings, progress=True)
        console.print(
            f"   bootstrap version [bold]v{result.version}[/bold]: accuracy "
            f"{result.reference_accuracy:.3f} on {result.counts.get('reference', 0)} held-out "
            f"airline tweets ({result.seconds:.0f}s)"
        )
        return result.version
    current = registry.champion()
    if current is None or current.version != boot:
        registry.promote(
            boot,
            approver=DEMO_APPROVER,
            reason="demo re-run: the story starts again from the bootstrap champion",
            labels=settings.model.labels,
        )
        was = f"v{current.version}" if current is not None else "no champion"
        console.print(
            f"[bold]1. champion[/bold]: re-pointed [bold]champion[/bold] from {was} to the "
            f"bootstrap version [bold]v{boot}[/bold] through the registry "
            "(no retraining; caches reused)"
        )
    else:
        console.print(
            f"[bold]1. champion[/bold]: the bootstrap version [bold]v{boot}[/bold] "
            "(reused, no retraining)"
        )
    return boot


def run_demo(settings: Settings, console: Console) -> int:
    """Run the demo; returns the process exit code (0 when the loop ran end to end)."""
    from driftloop.simulate import simulate_traffic
    from flows.monitor_flow import monitor_flow
    from flows.wiring import open_store_and_state, settings_overrides
    from retrain.registry import Registry

    started = time.perf_counter()
    s = demo_settings(settings)
    s.home.mkdir(parents=True, exist_ok=True)
    demo = s.demo
    console.print(
        Panel(
            f"Everything below lives in [bold]{s.home}/[/bold]: its own SQLite prediction log, "
            "MLflow store, caches, reports and alert outbox; configured stores and alert URLs "
            "are not touched.\n"
            f"{demo.days} simulated days of {demo.rows_per_day} predictions; from day "
            f"{demo.shift_start_day} a {demo.shift_fraction:.0%} share of the traffic is about "
            f"other topics. {demo.label_fraction:.0%} of predictions get a true label "
            f"{demo.label_delay_days * 24:g} h later.\n"
            "[bold yellow]Retrain approval is AUTOMATIC in this demo (retrain.auto_approve=true)."
            " In production a human approves with `driftloop approve <flow-run-id> --by NAME`."
            "[/bold yellow]",
            title="driftloop demo",
        )
    )

    registry = Registry(s.registry)
    boot = _champion(s, registry, console)

    reset_traffic(s)
    store, state = open_store_and_state(s)
    overrides = settings_overrides(s)
    start = (datetime.now(UTC) - timedelta(days=demo.days)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    console.print(
        f"[bold]2. production[/bold]: simulated traffic reset; {demo.days} days from "
        f"{start:%Y-%m-%d}, each served by the champion of the day and monitored at its end"
    )
    models: dict[str, tuple[Any, Any]] = {}
    days: list[DayResult] = []
    for day in range(demo.days):
        info = registry.champion()
        if info.version not in models:
            models.clear()  # one model in memory at a time
            model, tokenizer, _ = registry.load_champion(s.model.labels)
            models[info.version] = (model, tokenizer)
        model, tokenizer = models[info.version]
        sim = simulate_traffic(
            s,
            store,
            model=model,
            tokenizer=tokenizer,
            model_name=s.registry.model_name,
            model_version=info.version,
            first_day=day,
            days=1,
            start=start,
            progress=True,
        )
        day_start = start + timedelta(days=day)
        today = sim.days[0]
        console.print(
            f"   [bold]day {day}[/bold]  {day_start:%Y-%m-%d}  shift {today.shifted_share:>4.0%}  "
            f"served by v{info.version}: {today.rows} predictions ({today.labels} labelled "
            "later); monitoring ..."
        )
        outbox_before = len(_outbox(s))
        outcome = monitor_flow(
            window_start=day_start, window_end=day_start + timedelta(days=1), overrides=overrides
        )
        result = DayResult(
            day=day,
            date=f"{day_start:%Y-%m-%d}",
            shift=today.shifted_share,
            served_by=info.version,
            outcome=outcome,
            alerts=_outbox(s)[outbox_before:],
        )
        days.append(result)
        _show_day(console, result)

    _summary(console, s, days, boot, registry, state, time.perf_counter() - started)
    return 0


def _outbox(settings: Settings) -> list[dict[str, Any]]:
    path = settings.alerts.outbox
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


_COLOUR = {"ok": "green", "warn": "yellow", "breach": "bold red"}


def _verdict(outcome: dict[str, Any], *, short: bool = False) -> str:
    status = str(outcome["status"])
    colour = _COLOUR.get(status, "white")
    # A breach names what breached; a warning what warned (significant, not material).
    verdict = outcome.get("verdict") or {}
    checks = list(outcome.get("breached") or verdict.get("warned") or [])
    breached = f"{len(checks)} checks" if short and len(checks) > 2 else ", ".join(checks)
    return f"[{colour}]{status.upper()}[/{colour}]" + (f" ({breached})" if breached else "")


def _warning_detail(outcome: dict[str, Any]) -> str:
    """Why a warning does not page: the evidence of each warned check."""
    parts = []
    for check in (outcome.get("verdict") or {}).get("checks", []):
        if check["decision"] != "warn":
            continue
        ev = check.get("evidence", {})
        if check["name"] == "bias" and "baseline_eo_difference" in ev:
            parts.append(
                f"bias: equalized-odds gap {ev.get('equalized_odds_difference', 0):.2f} "
                f"({ev.get('eo_worst', '-')}), the champion's own gap when accepted "
                f"{ev['baseline_eo_difference']:.2f}: known, not widened, so no page"
            )
        else:
            parts.append(f"{check['name']}: significant but below its alert threshold, no page")
    return "; ".join(parts)


def _show_day(console: Console, r: DayResult) -> None:
    """One line per day; the breach, the alert, the retrain and the recovery in detail."""
    o = r.outcome
    console.print(f"      verdict {_verdict(o)} ({o['rows']} predictions sampled)")
    if o["status"] == "warn":
        console.print(f"           {_warning_detail(o)}")
    for alert in r.alerts:
        if alert["kind"] in ("breach", "reminder"):
            console.print(f"      [red]PAGE[/red] (outbox) [bold]{alert['title']}[/bold]")
            console.print(f"           {alert['body']}")
    retrain = o.get("retrain")
    if retrain:
        console.print(
            "      [bold yellow]AUTO-APPROVED[/bold yellow] by the demo "
            "(retrain.auto_approve=true; no human approved this retrain)"
        )
        _show_retrain(console, retrain)
    for alert in r.alerts:
        if alert["kind"] == "resolved":
            console.print(f"      [bold green]{alert['title']}[/bold green]")
            console.print(f"           {alert['body']}")


def _show_retrain(console: Console, retrain: dict[str, Any]) -> None:
    status = retrain.get("status", "?")
    if status == "insufficient_data":
        console.print(f"      retrain not started: {retrain.get('error')}")
        return
    gate = retrain.get("gate") or {}
    counts = retrain.get("counts") or {}
    console.print(
        f"      retrain on labelled rows of {retrain.get('window_start', '?')[:16]} to "
        f"{retrain.get('window_end', '?')[:16]} (labels as of then): "
        f"{counts.get('new_train', '?')} new + {counts.get('replay', '?')} replay rows, "
        f"{counts.get('holdout', '?')} held out for the gate, "
        f"{retrain.get('reference_rows', '?') if retrain.get('reference_rebased') else 0} "
        "for the next drift reference"
    )
    if gate:
        console.print(
            f"      gate: gain {gate['gain']:+.3f} on the new holdout (needs >= "
            f"{gate['min_gain']:+.3f}), forgetting {gate['forgetting']:+.3f} on the frozen "
            f"airline regression set (allowed <= {gate['max_forgetting']:.3f})"
        )
    if status == "promoted":
        console.print(
            f"      [bold green]PROMOTED[/bold green] v{retrain.get('version')} to champion; "
            + (
                f"its drift reference is {retrain.get('reference_rows')} held-out rows of the "
                "new traffic"
                if retrain.get("reference_rebased")
                else "too few held-out rows: the old drift reference was kept"
            )
        )
    else:
        reasons = "; ".join(map(str, gate.get("reasons") or [])) or status
        console.print(f"      [yellow]{status.upper()}[/yellow]: {reasons}")


def _summary(
    console: Console,
    s: Settings,
    days: list[DayResult],
    boot: str,
    registry: Any,
    state: Any,
    seconds: float,
) -> None:
    table = Table(title="3. summary")
    for column, justify in (
        ("day", "right"),
        ("date", "left"),
        ("shift", "right"),
        ("model", "left"),
        ("verdict", "left"),
        ("alert", "left"),
        ("retrain", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in days:
        retrain = r.outcome.get("retrain") or {}
        alerts = [a["kind"] for a in r.alerts if a["kind"] in ("breach", "reminder", "resolved")]
        table.add_row(
            str(r.day),
            r.date,
            f"{r.shift:.0%}",
            f"v{r.served_by}",
            _verdict(r.outcome, short=True),
            ", ".join(alerts) or "-",
            (
                f"{retrain['status']}"
                + (f" v{retrain['version']}" if retrain.get("version") else "")
                if retrain
                else "-"
            ),
        )
    console.print(table)
    console.print("reports (Evidently HTML, one per day):")
    for r in days:
        path = r.outcome.get("report_html") or r.outcome.get("report_json") or "-"
        console.print(f"   day {r.day}: {path}")
    champion = registry.champion()
    open_incidents = state.open_incidents()
    console.print(
        f"alerts: {s.alerts.outbox.resolve()}\n"
        f"MLflow: {registry.tracking_uri} (champion v{champion.version}, bootstrap v{boot})\n"
        f"open incidents: {len(open_incidents)}; demo took {seconds:.0f}s"
    )
