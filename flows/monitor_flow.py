"""The monitoring flow: sample a window, run every check, decide, report, alert, start a retrain.

Orchestration only: every statistic and threshold lives in ``monitor/`` and the settings.
I/O tasks (database, registry, MLflow) retry; computations do not (a retry would only
repeat a deterministic failure). Alert delivery retries per URL inside :mod:`flows.alerts`
(a task-level retry would page every URL again).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from driftloop.settings import Settings
from flows.errors import FlowError
from flows.state import StateDB, incident_key
from flows.wiring import build_settings, open_store_and_state, settings_overrides

log = logging.getLogger(__name__)

IO_RETRIES = 2
IO_RETRY_DELAY_S = 2.0
DECAY_LOOKBACK_DAYS = 14


@dataclass
class MonitorOutcome:
    """What one monitor run decided and did (returned by the flow, JSON-ready via to_dict)."""

    status: str
    breached: list[str]
    model_version: str | None
    window_start: str
    window_end: str
    rows: int
    report_html: str | None = None
    report_json: str | None = None
    incident_key: str | None = None
    incident_created: bool = False
    paged: str | None = None
    resolved: list[str] = field(default_factory=list)
    retrain: dict[str, Any] | None = None
    not_built: list[str] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------- I/O tasks


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def sample_window(
    settings: Settings, start: datetime, end: datetime, model_version: str | None
) -> pd.DataFrame:
    """A sample of the window's predictions (``settings.drift.sample_size`` rows)."""
    store, _ = open_store_and_state(settings)
    return store.sample(start, end, settings.drift.sample_size, model_version=model_version, seed=0)


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def labelled_rows(
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Labelled predictions of ``[start, end)`` (for decay and bias).

    Only labels that had arrived by ``as_of`` count (the monitor passes its window end, so a
    replayed window sees what a live run would have seen), and only predictions of
    ``model_version`` (decay and bias judge the champion, not the model it replaced).
    """
    store, _ = open_store_and_state(settings)
    return store.labelled(start, end, as_of=as_of, model_version=model_version)


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def load_champion(settings: Settings) -> tuple[Any, Any, Any, pd.DataFrame]:
    """The champion model, tokenizer, version info and its reference sample."""
    from retrain.registry import Registry

    registry = Registry(settings.registry)
    if registry.champion() is None:
        raise FlowError("no champion registered: run `driftloop bootstrap` first")
    model, tokenizer, info = registry.load_champion(settings.model.labels)
    try:
        from retrain.bootstrap import load_reference
    except ImportError as exc:
        raise FlowError(f"retrain.bootstrap.load_reference is not built yet: {exc}") from exc
    reference = load_reference(registry)
    return model, tokenizer, info, reference


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def projection_texts(settings: Settings, exclude: set[str]) -> list[str]:
    """Texts the embedding PCA is fitted on: a seeded sample of the champion's training rows.

    They must not be the drift reference's own rows (a PCA fitted on the KS reference inflates
    false alarms, see monitor.drift); the champion's replay pool is its training data, which
    the reference is held out from.
    """
    from retrain.bootstrap import load_replay
    from retrain.registry import Registry

    replay = load_replay(Registry(settings.registry))
    texts = [t for t in dict.fromkeys(replay["text"].astype(str)) if t not in exclude]
    if len(texts) > settings.drift.reference_size:
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(len(texts), settings.drift.reference_size, replace=False))
        texts = [texts[i] for i in keep]
    return texts


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def bias_baseline_rows(settings: Settings) -> pd.DataFrame | None:
    """The champion's frozen regression set with its own probabilities (its bias baseline)."""
    from retrain.bootstrap import load_regression_predictions
    from retrain.registry import Registry

    return load_regression_predictions(Registry(settings.registry))


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def log_to_mlflow(
    settings: Settings,
    verdict: dict[str, Any],
    model_version: str | None,
    report_paths: list[str],
) -> str | None:
    """Log p-values and the report under the ``driftloop-monitor`` experiment."""
    from retrain.registry import Registry

    registry = Registry(settings.registry.model_copy(update={"experiment": "driftloop-monitor"}))
    metrics: dict[str, float] = {"breach": float(verdict.get("status") == "breach")}
    for check in verdict.get("checks", []):
        for key in ("p_value", "adjusted_p_value"):
            value = check.get(key)
            if isinstance(value, int | float):
                metrics[f"{check['name']}.{key}"] = float(value)
    tags = {
        "driftloop.kind": "monitor",
        "driftloop.status": verdict.get("status", "?"),
        "driftloop.model_version": model_version or "none",
        "driftloop.model_name": settings.registry.model_name,
    }
    with registry.run(f"monitor-{verdict.get('window_end', '')}", tags=tags) as run:
        run.log_metrics(metrics)
        run.log_dict(verdict, "verdict.json")
        for path in report_paths:
            if Path(path).is_file():
                run.log_artifact(path, "report")
        return run.run_id


# --------------------------------------------------------------------------- computations


def _label_ids(values: pd.Series, labels: tuple[str, ...]) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index[v] if isinstance(v, str) else int(v) for v in values], dtype=int)


def _with_predicted_label(reference: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """The champion's reference sample with ``predicted_label`` (argmax) for the report."""
    if "predicted_label" in reference.columns or not len(reference):
        return reference
    out = reference.copy()
    out["predicted_label"] = [labels[i] for i in _probs(out["probabilities"]).argmax(axis=1)]
    return out


def _probs(values: pd.Series) -> np.ndarray:
    return np.asarray([list(p) for p in values], dtype=float)


@task(cache_policy=NO_CACHE)
def embed(
    settings: Settings, texts: list[str], model: Any, tokenizer: Any, version: str
) -> np.ndarray:
    """Embeddings through the per-version cache under ``settings.home`` (GPU when present)."""
    from monitor.embeddings import EmbeddingCache

    cache = EmbeddingCache(settings.home / "embeddings")
    result = cache.embed(
        texts,
        version,
        model,
        tokenizer,
        batch_size=settings.model.batch_size,
        max_length=settings.model.max_length,
        device=settings.model.device,
        progress=False,
    )
    return np.asarray(result.vectors)


@task(cache_policy=NO_CACHE)
def run_checks(
    settings: Settings,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    ref_emb: np.ndarray,
    cur_emb: np.ndarray,
    fit_emb: np.ndarray,
    labelled: pd.DataFrame,
    window_start: datetime,
    baseline_rows: pd.DataFrame | None = None,
) -> tuple[list[Any], list[str]]:
    """Every check of the run; returns the results and the checks whose module is missing.

    ``fit_emb`` are the rows the embedding PCA is fitted on (disjoint from the reference);
    ``baseline_rows`` the champion's regression set with its probabilities (bias baseline).
    """
    from monitor.bias import bias_check
    from monitor.checks import label_free_checks
    from monitor.decay import decay_test, window_metrics
    from monitor.drift import fit_projection

    d = settings.drift
    labels = settings.model.labels
    not_built: list[str] = []
    k = min(d.pca_components, ref_emb.shape[1])
    if len(fit_emb) < k:
        raise FlowError(
            f"{len(fit_emb)} training rows to fit the {k}-component PCA on; the champion's "
            "replay pool is too small (retrain or lower drift.pca_components)"
        )
    checks: list[Any] = label_free_checks(
        ref_emb,
        cur_emb,
        fit_projection(fit_emb, k),
        _probs(reference["probabilities"]),
        _probs(current["probabilities"]),
        _label_ids(reference["label"], labels) if "label" in reference else None,
        drift=d,
        decay=settings.decay,
        probability_tolerance=settings.store.probability_tolerance,
    )
    # Decay: window accuracies of labelled production rows; the last min_windows windows
    # are "recent", the earlier ones of the lookback the reference period.
    dec = settings.decay
    if len(labelled):
        y_true = _label_ids(labelled["label"], labels)
        y_pred = _label_ids(labelled["predicted_label"], labels)
        windows = window_metrics(
            labelled["timestamp"],
            y_true,
            y_pred,
            freq=dec.window,
            labels=list(range(len(labels))),
            min_rows=dec.min_labels_per_window,
        )
    else:
        windows = ()
    accs = [w.accuracy for w in windows]
    split = max(0, len(accs) - dec.min_windows)
    checks.append(
        decay_test(
            accs[:split],
            accs[split:],
            alpha=dec.alpha,
            min_windows=dec.min_windows,
            min_drop=dec.min_drop,
        )
    )
    # Bias over the segment attribute, on the labelled rows of the current window that carry
    # it (rows without the attribute, e.g. tweets naming no airline, belong to no group).
    recent = labelled
    if len(labelled):
        ts = pd.to_datetime(labelled["timestamp"], utc=True)
        recent = labelled[ts >= pd.Timestamp(window_start)]
    groups = np.asarray(
        [
            seg.get(settings.bias.segment) if isinstance(seg, dict) else None
            for seg in recent.get("segments", pd.Series([], dtype=object))
        ],
        dtype=object,
    )
    has_group = np.array([g is not None for g in groups], dtype=bool)
    grouped = recent[has_group] if len(recent) else recent
    bias_kwargs: dict[str, Any] = {
        "labels": list(range(len(labels))),
        "max_dp_difference": settings.bias.max_demographic_parity_difference,
        "max_eo_difference": settings.bias.max_equalized_odds_difference,
        "min_group_size": settings.bias.min_group_size,
        "min_rate_rows": settings.bias.min_rate_rows,
    }
    baseline = None
    segment = settings.bias.segment
    if baseline_rows is not None and segment in baseline_rows.columns:
        base = baseline_rows[baseline_rows[segment].notna()]
        baseline = bias_check(
            _label_ids(base["label"], labels),
            _probs(base["probabilities"]).argmax(axis=1),
            base[segment].astype(str).to_numpy(dtype=object),
            name="bias_baseline",
            **bias_kwargs,
        )
    checks.append(
        bias_check(
            _label_ids(grouped["label"], labels) if len(grouped) else np.array([], dtype=int),
            _label_ids(grouped["predicted_label"], labels)
            if len(grouped)
            else np.array([], dtype=int),
            np.asarray([str(g) for g in groups[has_group]], dtype=object),
            baseline=baseline,
            worsening_tolerance=settings.bias.worsening_tolerance,
            **bias_kwargs,
        )
    )
    return checks, not_built


@task(cache_policy=NO_CACHE)
def write_reports(
    settings: Settings,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    verdict: Any,
    ref_emb: np.ndarray,
    cur_emb: np.ndarray,
    stamp: str,
) -> tuple[str | None, str]:
    """The Evidently HTML report and the verdict JSON; returns their paths.

    Evidently's numpy RuntimeWarnings (empty bins, constant columns) are silenced here only.
    """
    out_dir = settings.home / "reports" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from monitor.report import write_report
    except ImportError:
        log.warning("monitor.report is not built yet: writing the verdict JSON only")
        path = out_dir / "verdict.json"
        path.write_text(verdict.to_json(), encoding="utf-8")
        return None, str(path.resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        paths = write_report(
            reference,
            current,
            verdict,
            out_dir,
            reference_embeddings=ref_emb,
            current_embeddings=cur_emb,
        )
    return str(Path(paths.html).resolve()), str(Path(paths.json).resolve())


def verdict_markdown(outcome: MonitorOutcome) -> str:
    """The Prefect artifact: status, one row per check, the evidence and the report path."""
    v = outcome.verdict
    lines = [
        f"# driftloop monitor: **{outcome.status.upper()}**",
        "",
        f"Model version `{outcome.model_version}`, window `{outcome.window_start}` to "
        f"`{outcome.window_end}`, {outcome.rows} rows sampled.",
        "",
        "| check | decision | p-value | adjusted p | key evidence |",
        "|---|---|---|---|---|",
    ]
    for check in v.get("checks", []):
        ev = check.get("evidence", {})
        keys = [k for k in ev if k not in ("decision", "test", "alpha")][:4]
        shown = ", ".join(f"{k}={_fmt(ev[k])}" for k in keys)
        lines.append(
            f"| {check['name']} | {check['decision']} | {_fmt(check.get('p_value'))} | "
            f"{_fmt(check.get('adjusted_p_value'))} | {shown} |"
        )
    lines.append("")
    if outcome.report_html:
        lines.append(f"Report: [{outcome.report_html}](file://{outcome.report_html})")
    if outcome.report_json:
        lines.append(f"Verdict JSON: `{outcome.report_json}`")
    if outcome.incident_key:
        lines.append(f"Incident: `{outcome.incident_key}` (paged: {outcome.paged or 'no'})")
    if outcome.not_built:
        lines.append(f"Checks not built yet: {', '.join(outcome.not_built)}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


# --------------------------------------------------------------------------- the flow


def _default_window(
    window_start: datetime | None, window_end: datetime | None, window_hours: float
) -> tuple[datetime, datetime]:
    end = window_end or datetime.now(UTC)
    start = window_start or end - timedelta(hours=window_hours)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if start >= end:
        raise FlowError(f"empty window: {start} >= {end}")
    return start, end


@flow(name="driftloop-monitor", log_prints=True)
def monitor_flow(
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    window_hours: float = 24.0,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    trigger_retrain: bool = True,
) -> dict[str, Any]:
    """Monitor one window of production traffic; on a breach open an incident and page.

    Args:
        window_start: Start of the window (default ``window_end - window_hours``).
        window_end: End of the window, exclusive (default now, UTC).
        window_hours: Window length when ``window_start`` is not given.
        config_file: TOML settings file (default ``./driftloop.toml`` if present).
        overrides: Settings values taking precedence (JSON-ready, see ``settings_overrides``).
        trigger_retrain: Start (or request) the approval-gated retrain on a breach.

    Returns:
        :class:`MonitorOutcome` as a dict.
    """
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    from monitor.verdict import build_verdict

    settings = build_settings(config_file, overrides)
    start, end = _default_window(window_start, window_end, window_hours)
    _, state = open_store_and_state(settings)
    model, tokenizer, info, reference = load_champion(settings)
    version = str(info.version)
    current = sample_window(settings, start, end, None)
    labelled = labelled_rows(
        settings, end - timedelta(days=DECAY_LOOKBACK_DAYS), end, as_of=end, model_version=version
    )
    reference = _with_predicted_label(
        reference.head(settings.drift.reference_size), settings.model.labels
    )
    window_facts: dict[str, float | int | str] = {
        "rows": len(current),
        "reference_rows": len(reference),
        "model_version": version,
        "labelled_rows": len(labelled),
    }
    if len(current) < settings.drift.min_samples:
        verdict = build_verdict(
            [], alpha=settings.drift.alpha, window_start=start, window_end=end, window=window_facts
        )
        ref_emb = cur_emb = np.empty((0, 0))
        not_built: list[str] = []
        log.warning("only %d rows in the window: insufficient data", len(current))
    else:
        ref_texts = [str(t) for t in reference["text"]]
        ref_emb = embed(settings, ref_texts, model, tokenizer, version)
        cur_emb = embed(settings, [str(t) for t in current["text"]], model, tokenizer, version)
        fit_texts = projection_texts(settings, set(ref_texts))
        fit_emb = embed(settings, fit_texts, model, tokenizer, version)
        checks, not_built = run_checks(
            settings,
            reference,
            current,
            ref_emb,
            cur_emb,
            fit_emb,
            labelled,
            start,
            bias_baseline_rows(settings),
        )
        verdict = build_verdict(
            checks,
            alpha=settings.drift.alpha,
            method="fdr_bh",
            window_start=start,
            window_end=end,
            window=window_facts,
        )
    verdict_dict = verdict.to_dict()
    stamp = f"{end:%Y%m%dT%H%M%S}-v{version}"
    if len(current):
        html, json_path = write_reports(
            settings, reference, current, verdict, ref_emb, cur_emb, stamp
        )
    else:
        html, json_path = None, None
    outcome = MonitorOutcome(
        status=verdict.status,
        breached=list(verdict.breached),
        model_version=version,
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        rows=len(current),
        report_html=html,
        report_json=json_path,
        not_built=not_built,
        verdict=verdict_dict,
    )
    run_id = str(flow_run.id) if flow_run.id else None
    model_name = settings.registry.model_name
    if verdict.status == "breach":
        _on_breach(
            settings, state, outcome, model_name, version, run_id, trigger_retrain, (start, end)
        )
    elif verdict.status in ("ok", "warn"):
        # A warning does not page and does not keep a breach open: nothing breaches any more.
        _on_ok(settings, state, outcome, model_name)
    record_run(state, outcome, model_name, start, end, run_id)
    try:
        log_to_mlflow(settings, verdict_dict, version, [p for p in (html, json_path) if p])
    except Exception as exc:  # the verdict stands even when tracking is down
        log.error("could not log the monitor run to MLflow: %s", exc)
    create_markdown_artifact(
        verdict_markdown(outcome),
        key="driftloop-monitor-verdict",
        description=f"driftloop verdict {outcome.status}",
    )
    print(f"verdict: {outcome.status} (breached: {', '.join(outcome.breached) or '-'})")
    return outcome.to_dict()


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def record_run(
    state: StateDB,
    outcome: MonitorOutcome,
    model_name: str,
    start: datetime,
    end: datetime,
    run_id: str | None,
) -> None:
    """Store the verdict for ``driftloop status``."""
    state.record_monitor_run(
        model_name=model_name,
        model_version=outcome.model_version,
        status=outcome.status,
        breached=outcome.breached,
        window_start=start,
        window_end=end,
        report_html=outcome.report_html or outcome.report_json,
        flow_run_id=run_id,
        incident_key=outcome.incident_key,
    )


def _on_breach(
    settings: Settings,
    state: StateDB,
    outcome: MonitorOutcome,
    model_name: str,
    version: str,
    run_id: str | None,
    trigger_retrain: bool,
    window: tuple[datetime, datetime],
) -> None:
    """Open (or join) the incident, page unless deduplicated, start the retrain once.

    The retrain trains on the labelled rows since this breaching window began: inline (auto
    approval) with labels as of the window end; through the deployment with labels as of
    its approval.
    """
    from flows.alerts import notify_breach
    from flows.state import APPROVAL_AUTO, APPROVAL_PENDING
    from flows.wiring import RETRAIN_DEPLOYMENT, retrain_deployment_exists

    key = incident_key(model_name, version)
    incident, created = state.open_incident(
        key,
        model_name=model_name,
        model_version=version,
        verdict=outcome.verdict,
        report_path=outcome.report_html or outcome.report_json,
        monitor_flow_run_id=run_id,
    )
    outcome.incident_key, outcome.incident_created = key, created
    retrain_run_id = incident.retrain_flow_run_id
    start_inline = False
    if trigger_retrain and settings.retrain.auto_approve:
        start_inline = state.claim_retrain(key, approval=APPROVAL_AUTO)
    elif (
        trigger_retrain
        and retrain_deployment_exists()
        and state.claim_retrain(key, approval=APPROVAL_PENDING)
    ):
        from prefect.deployments import run_deployment

        run = run_deployment(
            RETRAIN_DEPLOYMENT,
            parameters={
                "incident_key": key,
                "overrides": settings_overrides(settings),
                "claimed": True,
                "since": window[0].isoformat(),
            },
            timeout=0,
            as_subflow=False,
        )
        retrain_run_id = str(run.id)
        state.update_incident(incident.id, retrain_flow_run_id=retrain_run_id)
        outcome.retrain = {"status": "awaiting_approval", "flow_run_id": retrain_run_id}
    report = notify_breach(
        state,
        settings.alerts,
        incident,
        outcome.verdict,
        report_path=outcome.report_html or outcome.report_json,
        retrain_flow_run_id=retrain_run_id,
        auto_approved=start_inline,
    )
    outcome.paged = None if report is None else report.kind
    if start_inline:
        from flows.retrain_flow import retrain_flow

        outcome.retrain = retrain_flow(
            incident_key=key,
            overrides=settings_overrides(settings),
            claimed=True,
            since=window[0],
            as_of=window[1],
        )


def _on_ok(settings: Settings, state: StateDB, outcome: MonitorOutcome, model_name: str) -> None:
    """Resolve open incidents of the model (the verdict is ok or warn) and tell on-call."""
    from flows.alerts import notify_resolved

    for incident in state.resolve_open(model_name):
        outcome.resolved.append(incident.key)
        notify_resolved(
            state,
            settings.alerts,
            incident,
            report_path=outcome.report_html or outcome.report_json,
            detail=(
                f"Version {outcome.model_version} is serving; the window "
                f"{outcome.window_start} to {outcome.window_end} ({outcome.rows} rows) is ok."
            ),
        )
