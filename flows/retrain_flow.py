"""The approval-gated retrain flow: wait for a human, fine-tune, gate, promote, notify.

The flow pauses in place with ``pause_flow_run(wait_for_input=ApprovalInput)`` rather than
``suspend_flow_run``: suspending exits the process and needs a deployment to resume, which the
embedded setup (ephemeral API, no worker) does not have; a paused run keeps its process (and
the loaded data) and resumes within ``poll_interval_s`` of ``driftloop approve``. The
timeout is ``settings.retrain.approval_timeout_s``; a run not approved in time ends as
``expired`` and the on-call person is told.
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
    APPROVAL_PENDING,
    APPROVAL_REJECTED,
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


@task(cache_policy=NO_CACHE)
def run_retrain(
    settings: Settings, window: tuple[datetime, datetime], approver: str, reason: str
) -> dict[str, Any]:
    """Assemble, fine-tune, gate and (if the gate passes) promote; a plain dict of the outcome."""
    try:
        from retrain.pipeline import retrain
    except ImportError as exc:
        raise FlowError(f"retrain.pipeline is not built yet: {exc}") from exc
    store, _ = open_store_and_state(settings)
    outcome = retrain(
        settings, store, window=window, approver=approver, reason=reason, progress=False
    )
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
        window_days: Labelled production data of the last ``window_days`` days is used.
        poll_interval_s: How often a paused run checks whether it was resumed.

    Status values: ``promoted``, ``refused`` (the gate said no), ``rejected``, ``expired``,
    ``duplicate`` (another run already handles this incident).
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
        banner = "AUTO-APPROVED: settings.retrain.auto_approve is on; no human approved this"
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

    end = datetime.now(UTC)
    window = (end - timedelta(days=window_days), end)
    result = run_retrain(settings, window, decision.approver, decision.reason)
    status = "promoted" if result["promoted"] else "refused"
    if incident is not None:
        set_incident(state, incident.id, {"retrain_outcome": status})
    notify(
        state,
        settings.alerts,
        key,
        "retrain",
        f"Retrain {status} for {key}",
        f"Approved by {decision.approver} ({decision.reason}). Gate: {status}.",
        severity="success" if status == "promoted" else "warning",
        evidence={k: v for k, v in result.items() if isinstance(v, int | float | str)},
    )
    return {
        "status": status,
        "incident_key": key,
        "approver": decision.approver,
        "approval": approval_state,
        **result,
    }
