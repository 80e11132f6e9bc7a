"""The approval-gated retrain flow: wait for a human, fine-tune, gate, promote, notify.

The flow pauses in place with ``pause_flow_run(wait_for_input=ApprovalInput)`` rather than
``suspend_flow_run``: suspending exits the process and needs a deployment to resume, which the
embedded setup (ephemeral API, no worker) does not have; a paused run keeps its process (and
the loaded data) and resumes within ``poll_interval_s`` of ``driftloop approve``. The
timeout is ``settings.retrain.approval_timeout_s``; a run not approved in time ends as
``expired`` and the on-call person is told.

Training data (see :func:`retrain_window`): labelled predictions from the start of the
breaching window (``since``, else the incident's verdict ``window_start``) up to ``as_of``,
counting only labels that had arrived by ``as_of`` (default: the moment of approval), plus
the champion's replay pool. A manual retrain without an incident uses the last
``window_days`` days. Too few labelled rows end the run as ``insufficient_data`` and free the
incident's retrain claim, so a later breach run (with more labels) can start it again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput

from driftloop.settings import Settings
from flows.alerts import approve_commands, notify
from flows.errors import FlowError
from flows.state import (
    APPROVAL_APPROVED,
    APPROVAL_AUTO,
    APPROVAL_EXPIRED,
    APPROVAL_NONE,
    APPROVAL_PENDING,
    APPROVAL_REJECTED,
    Incident,
    StateDB,
)
from flows.wiring import build_settings, open_store_and_state

log = logging.getLogger(__name__)

AUTO_APPROVER = "auto-approve (settings.retrain.auto_approve)"
RETRAIN_LOOKBACK_DAYS = 14


class ApprovalInput(RunInput):
    """The form a human fills in (Prefect UI) or sends with ``driftloop approve``."""

    approve: bool
    approver: str
    reason: str = ""


@task(retries=2, retry_delay_seconds=2.0, cache_policy=NO_CACHE)
def set_incident(state: StateDB, incident_id: int, values: dict[str, Any]) -> None:
    """Update the incident row (I/O, retried)."""
    state.update_incident(incident_id, **values)


def _utc(value: datetime | str) -> datetime:
    ts = datetime.fromisoformat(value) if isinstance(value, str) else value
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def retrain_window(
    incident: Incident | None,
    *,
    as_of: datetime,
    since: datetime | None = None,
    window_days: float = RETRAIN_LOOKBACK_DAYS,
) -> tuple[datetime, datetime]:
    """The prediction-time window ``[start, as_of)`` a retrain reads labelled rows from.

    ``start`` is ``since`` when given (the monitor flow passes its breaching window's start),
    else the ``window_start`` of the incident's verdict, else ``as_of - window_days`` (a
    manual retrain). Starting at the breach keeps pre-shift rows (which the replay pool
    already represents) from diluting the new traffic.

    Raises:
        FlowError: the window is empty.
    """
    end = _utc(as_of)
    if since is not None:
        start = _utc(since)
    elif incident is not None and incident.verdict.get("window_start"):
        start = _utc(str(incident.verdict["window_start"]))
    else:
        start = end - timedelta(days=window_days)
    if start >= end:
        raise FlowError(f"empty retrain window: {start.isoformat()} >= {end.isoformat()}")
    return start, end


@task(cache_policy=NO_CACHE)
def run_retrain(
    settings: Settings, window: tuple[datetime, datetime], approver: str, reason: str
) -> dict[str, Any]:
    """Assemble, fine-tune, gate and (if the gate passes) promote; a plain dict of the outcome.

    Labels are read as of the window's end. Too little data is an outcome, not a crash:
    ``{"status": "insufficient_data", "error": ...}``.
    """
    try:
        from retrain.errors import TrainingDataError
        from retrain.pipeline import retrain
    except ImportError as exc:
        raise FlowError(f"retrain.pipeline is not built yet: {exc}") from exc
    store, _ = open_store_and_state(settings)
    try:
        outcome = retrain(
            settings,
            store,
            window=window,
            as_of=window[1],
            approver=approver,
            reason=reason,
            progress=True,
        )
    except TrainingDataError as exc:
        log.warning("retrain not started: %s", exc)
        return {"status": "insufficient_data", "promoted": False, "error": str(exc)}
    return outcome_dict(outcome)


def outcome_dict(outcome: Any) -> dict[str, Any]:
    """A JSON-ready view of a ``RetrainOutcome`` (whatever its exact fields)."""
    if hasattr(outcome, "to_dict"):
        data = dict(outcome.to_dict())
    elif hasattr(outcome, "__dataclass_fields__"):
        from dataclasses import asdict

        data = asdict(outcome)
    else:
        data = dict(vars(outcome))
    data["promoted"] = bool(getattr(outcome, "promoted", data.get("promoted", False)))
    return {k: _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _plain(asdict(value))
    return str(value)


@flow(name="driftloop-retrain", log_prints=True)
def retrain_flow(
    incident_key: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    approver: str | None = None,
    reason: str | None = None,
    claimed: bool = False,
    window_days: float = RETRAIN_LOOKBACK_DAYS,
    as_of: datetime | None = None,
    since: datetime | None = None,
    poll_interval_s: int = 10,
) -> dict[str, Any]:
    """Retrain after approval; returns ``{"status": ..., ...}``.

    Args:
        incident_key: The open incident this retrain answers (None: a manual retrain).
        config_file: TOML settings file.
        overrides: Settings values taking precedence (JSON-ready).
        approver: Given by a human starting the run (``driftloop retrain --by``): the run is
            approved by that person and does not pause.
        reason: Why (required with ``approver``).
        claimed: The caller already claimed the incident's retrain (the monitor flow).
        window_days: A retrain without an incident reads the last ``window_days`` days.
        as_of: Labels that had arrived by then are used, predictions up to then (default:
            now, once approved; the demo replays past days with their own ``as_of``).
        since: Start of the training window (default: the incident's breaching window).
        poll_interval_s: How often a paused run checks whether it was resumed.

    Status values: ``promoted``, ``refused`` (the gate said no), ``rejected``, ``expired``,
    ``duplicate`` (another run already handles this incident), ``insufficient_data`` (too
    few labelled rows; the incident's retrain can be started again).
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.runtime import flow_run

    settings = build_settings(config_file, overrides)
    _, state = open_store_and_state(settings)
    run_id = str(flow_run.id) if flow_run.id else None
    incident = state.get_open(incident_key) if incident_key else None
    if incident_key and incident is None:
        raise FlowError(f"no open incident {incident_key!r}")
    key = incident_key or "manual-retrain"
    if incident is not None:
        if not claimed and not state.claim_retrain(incident.key, approval=APPROVAL_PENDING):
            log.warning("incident %s already has a retrain (%s)", key, incident.approval)
            return {"status": "duplicate", "incident_key": key}
        set_incident(state, incident.id, {"retrain_flow_run_id": run_id})

    if approver:
        if not reason:
            raise FlowError("a reason is required with --by")
        decision = ApprovalInput(approve=True, approver=approver, reason=reason)
        approval_state = APPROVAL_APPROVED
    elif settings.retrain.auto_approve:
        banner = (
            f"AUTO-APPROVED retrain for {key}: settings.retrain.auto_approve is on; "
            "no human approved this"
        )
        log.warning(banner)
        print(banner)
        decision = ApprovalInput(approve=True, approver=AUTO_APPROVER, reason=banner)
        approval_state = APPROVAL_AUTO
    else:
        approve_cmd, reject_cmd = approve_commands(run_id, key)
        notify(
            state,
            settings.alerts,
            key,
            "approval",
            f"Approval needed: retrain for {key}",
            f"Retrain flow run {run_id} is paused until approved or rejected "
            f"(expires in {settings.retrain.approval_timeout_s} s). "
            "Prefect UI: open the flow run and press Resume, then fill in the form.",
            severity="warning",
            report_path=incident.report_path if incident else None,
            approve_command=approve_cmd,
            reject_command=reject_cmd,
        )
        if incident is not None:
            set_incident(state, incident.id, {"approval": APPROVAL_PENDING})
        print(f"waiting for approval: {approve_cmd}")
        try:
            decision = pause_flow_run(
                wait_for_input=ApprovalInput,
                timeout=settings.retrain.approval_timeout_s,
                poll_interval=min(poll_interval_s, settings.retrain.approval_timeout_s),
                key="approval",
            )
        except FlowPauseTimeout:
            if incident is not None:
                set_incident(state, incident.id, {"approval": APPROVAL_EXPIRED})
            notify(
                state,
                settings.alerts,
                key,
                "expired",
                f"Retrain approval expired for {key}",
                f"No decision within {settings.retrain.approval_timeout_s} s; nothing was "
                f"retrained. Start again with: {approve_commands(None, key)[0]}",
                severity="warning",
            )
            return {"status": "expired", "incident_key": key, "flow_run_id": run_id}
        approval_state = APPROVAL_APPROVED if decision.approve else APPROVAL_REJECTED

    if incident is not None:
        set_incident(
            state,
            incident.id,
            {
                "approval": approval_state,
                "approver": decision.approver,
                "approval_reason": decision.reason,
            },
        )
    if not decision.approve:
        notify(
            state,
            settings.alerts,
            key,
            "retrain",
            f"Retrain rejected for {key}",
            f"{decision.approver} rejected the retrain: {decision.reason}",
            severity="info",
        )
        return {"status": "rejected", "incident_key": key, "approver": decision.approver}

    window = retrain_window(
        incident, as_of=as_of or datetime.now(UTC), since=since, window_days=window_days
    )
    result = run_retrain(settings, window, decision.approver, decision.reason)
    common = {
        "incident_key": key,
        "approver": decision.approver,
        "approval": approval_state,
        "window_start": window[0].isoformat(),
        "window_end": window[1].isoformat(),
    }
    if result.get("status") == "insufficient_data":
        if incident is not None:
            set_incident(
                state,
                incident.id,
                {"approval": APPROVAL_NONE, "retrain_outcome": "insufficient_data"},
            )
        notify(
            state,
            settings.alerts,
            key,
            "retrain",
            f"Retrain not started for {key}: too little labelled data",
            f"Approved by {decision.approver}, but {result['error']}. Nothing was trained; "
            "the next breaching monitor run starts the retrain again.",
            severity="warning",
        )
        return {**result, **common, "status": "insufficient_data"}
    status = "promoted" if result["promoted"] else "refused"
    if incident is not None:
        set_incident(state, incident.id, {"retrain_outcome": status})
    notify(
        state,
        settings.alerts,
        key,
        "retrain",
        f"Retrain {status} for {key}",
        f"Approved by {decision.approver} ({decision.reason}). {gate_summary(result)}",
        severity="success" if status == "promoted" else "warning",
        evidence={
            **{k: v for k, v in result.items() if isinstance(v, int | float | str)},
            **{
                f"gate.{k}": v
                for k, v in (result.get("gate") or {}).items()
                if isinstance(v, int | float | str)
            },
        },
    )
    return {"status": status, **common, **result}


def gate_summary(result: dict[str, Any]) -> str:
    """One sentence: the gate's decision and numbers, and what happened to the reference."""
    gate = result.get("gate") or {}
    parts = [
        f"Gate {'passed' if result.get('promoted') else 'refused'} version "
        f"{result.get('version', '?')}"
    ]
    if isinstance(gate.get("gain"), int | float):
        parts.append(
            f"gain {gate['gain']:+.3f} on the new holdout (needs >= {gate['min_gain']:+.3f}), "
            f"forgetting {gate['forgetting']:+.3f} on the regression set "
            f"(allowed <= {gate['max_forgetting']:.3f})"
        )
    if gate.get("reasons"):
        parts.append("reasons: " + "; ".join(map(str, gate["reasons"])))
    if result.get("promoted"):
        parts.append(
            f"drift reference rebased on {result.get('reference_rows')} held-out rows"
            if result.get("reference_rebased")
            else "drift reference carried from the previous champion"
        )
    head, rest = parts[0], "; ".join(parts[1:])
    return f"{head}: {rest}." if rest else f"{head}."
