"""Alert delivery: an outbox JSONL file always, plus Apprise URLs with retries and backoff.

Policy (what pages when) lives in :func:`notify_breach` / :func:`notify_resolved`; the
deduplication state (cooldown, reminders) is kept in the database (:mod:`flows.state`) so
it holds across processes and concurrent monitor runs. Secrets in URLs are never logged,
stored or written to the outbox: targets are shown as Apprise privacy URLs
(:func:`mask_url`) and every error text is scrubbed of the raw URL.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from driftloop.settings import AlertSettings
from flows.state import Incident, StateDB, utcnow

log = logging.getLogger(__name__)

OUTBOX_TARGET = "outbox"


@dataclass(frozen=True)
class AlertMessage:
    """One message to the on-call person."""

    incident_key: str
    kind: str  # breach, reminder, resolved, approval, retrain, expired
    title: str
    body: str
    severity: str = "failure"  # apprise notify type: info, success, warning, failure
    evidence: Mapping[str, Any] = field(default_factory=dict)
    report_path: str | None = None
    approve_command: str | None = None
    reject_command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the outbox line)."""
        out = asdict(self)
        out["evidence"] = dict(self.evidence)
        out["at"] = utcnow().isoformat() + "Z"
        return out


@dataclass(frozen=True)
class TargetResult:
    """Outcome of delivering one message to one target."""

    target: str  # masked
    ok: bool
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    """Outcome of one message over every target."""

    kind: str
    outbox: Path
    targets: tuple[TargetResult, ...]

    @property
    def all_failed(self) -> bool:
        """True when URLs were configured and none received the message."""
        return bool(self.targets) and not any(t.ok for t in self.targets)

    @property
    def delivered(self) -> int:
        """Targets that received the message (the outbox not counted)."""
        return sum(t.ok for t in self.targets)


def mask_url(url: str) -> str:
    """The Apprise privacy form of ``url`` (passwords and tokens elided), query dropped."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin is not None:
            return str(plugin.url(privacy=True)).split("?", 1)[0]
    except Exception:  # an unparsable URL must not leak through an error message
        log.debug("could not parse an alert URL for masking")
    scheme = url.split("://", 1)[0] if "://" in url else "unknown"
    return f"{scheme}://****"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Replace each raw URL (and its credential parts) in ``text`` with its masked form."""
    for url in secrets:
        if url and url in text:
            text = text.replace(url, mask_url(url))
        # user:password@ and path tokens that may appear on their own in an error text
        for part in re.split(r"[/:@?&=#]+", url.split("://", 1)[-1]):
            if len(part) >= 8 and part in text and not part.replace(".", "").isdigit():
                text = text.replace(part, "****")
    return text


def format_text(message: AlertMessage) -> str:
    """Plain-text body: summary, evidence, report path, approve/reject commands."""
    lines = [message.body]
    if message.evidence:
        lines.append("")
        lines.append("Evidence:")
        for key, value in message.evidence.items():
            lines.append(f"  {key}: {value}")
    if message.report_path:
        lines.append(f"Report: {message.report_path}")
    if message.approve_command:
        lines.append(f"Approve: {message.approve_command}")
    if message.reject_command:
        lines.append(f"Reject:  {message.reject_command}")
    return "\n".join(lines)


def _send_once(url: str, title: str, body: str, severity: str) -> bool:
    import apprise

    apobj = apprise.Apprise()
    if not apobj.add(url):
        raise ValueError("invalid Apprise URL")
    return bool(apobj.notify(title=title, body=body, notify_type=severity))


def write_outbox(path: Path, message: AlertMessage) -> None:
    """Append the message to the JSONL outbox (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(message.to_dict(), default=str) + "\n")


def deliver(
    message: AlertMessage,
    settings: AlertSettings,
    state: StateDB | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    sender: Callable[[str, str, str, str], bool] = _send_once,
) -> DeliveryReport:
    """Write the outbox, then send to every URL with retries and exponential backoff.

    Each URL gets ``1 + settings.retries`` attempts, waiting ``backoff_s * 2**i`` between
    them. Every outcome is logged in ``state`` (masked target). Never raises on delivery
    failure: the caller records the incident whatever happens.
    """
    write_outbox(settings.outbox, message)
    if state is not None:
        state.record_delivery(
            incident_key=message.incident_key,
            kind=message.kind,
            target=OUTBOX_TARGET,
            ok=True,
            attempts=1,
            error=None,
        )
    body = format_text(message)
    results: list[TargetResult] = []
    for url in settings.urls:
        masked = mask_url(url)
        error: str | None = None
        ok = False
        attempts = 0
        for attempt in range(settings.retries + 1):
            attempts = attempt + 1
            try:
                ok = sender(url, message.title, body, message.severity)
                error = None if ok else "delivery refused or endpoint unreachable"
            except Exception as exc:
                error = scrub(f"{type(exc).__name__}: {exc}", settings.urls)
            if ok:
                break
            if attempt < settings.retries:
                delay = settings.backoff_s * (2**attempt)
                log.warning(
                    "alert to %s failed (attempt %d/%d), retrying in %.1fs",
                    masked,
                    attempts,
                    settings.retries + 1,
                    delay,
                )
                sleep(delay)
        if not ok:
            log.error("alert to %s failed after %d attempts: %s", masked, attempts, error)
        results.append(TargetResult(target=masked, ok=ok, attempts=attempts, error=error))
        if state is not None:
            state.record_delivery(
                incident_key=message.incident_key,
                kind=message.kind,
                target=masked,
                ok=ok,
                attempts=attempts,
                error=error,
            )
    return DeliveryReport(kind=message.kind, outbox=settings.outbox, targets=tuple(results))


def approve_commands(flow_run_id: str | None, incident_key: str) -> tuple[str, str]:
    """The exact approve / reject commands for a retrain run (or how to start one)."""
    if flow_run_id:
        return (
            f"driftloop approve {flow_run_id} --by YOUR_NAME --reason 'why'",
            f"driftloop approve {flow_run_id} --by YOUR_NAME --reject --reason 'why'",
        )
    return (
        f"driftloop retrain --incident '{incident_key}' --by YOUR_NAME --reason 'why'",
        "no action needed: the incident stays open until a verdict is ok",
    )


def breach_message(
    incident: Incident,
    kind: str,
    verdict: Mapping[str, Any],
    *,
    report_path: str | None,
    retrain_flow_run_id: str | None,
    auto_approved: bool = False,
) -> AlertMessage:
    """The page for a breach (or its reminder), with evidence and the approval commands."""
    breached = list(verdict.get("breached", []))
    evidence: dict[str, Any] = {"status": verdict.get("status", "breach")}
    evidence["breached_checks"] = ", ".join(breached) or "-"
    for check in verdict.get("checks", []) if isinstance(verdict.get("checks"), list) else []:
        if not isinstance(check, Mapping):
            continue
        name = str(check.get("name", "?"))
        if name in breached or check.get("alert"):
            for key in ("p_value", "adjusted_p_value", "statistic", "drop", "share_novel"):
                if check.get(key) is not None:
                    evidence[f"{name}.{key}"] = check[key]
    for key, value in (verdict.get("evidence") or {}).items():
        if isinstance(value, int | float | str) and len(evidence) < 30:
            evidence[str(key)] = value
    approve, reject = approve_commands(retrain_flow_run_id, incident.key)
    prefix = "REMINDER: " if kind == "reminder" else ""
    title = f"{prefix}driftloop breach on {incident.key}"
    body = (
        f"The monitor verdict for {incident.key} is BREACH "
        f"(checks: {evidence['breached_checks']}). "
        f"Opened {incident.opened_at:%Y-%m-%d %H:%M} UTC. "
        + (
            "The retrain was AUTO-APPROVED (retrain.auto_approve is on): no human approved it."
            if auto_approved
            else "A retrain is waiting for approval."
        )
    )
    return AlertMessage(
        incident_key=incident.key,
        kind=kind,
        title=title,
        body=body,
        severity="failure",
        evidence=evidence,
        report_path=report_path,
        approve_command=approve,
        reject_command=reject,
    )


def notify_breach(
    state: StateDB,
    settings: AlertSettings,
    incident: Incident,
    verdict: Mapping[str, Any],
    *,
    report_path: str | None,
    retrain_flow_run_id: str | None,
    auto_approved: bool = False,
    now: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    sender: Callable[[str, str, str, str], bool] = _send_once,
) -> DeliveryReport | None:
    """Page for an open incident unless deduplicated; returns None when nothing was sent."""
    kind = state.claim_notification(
        incident.key,
        cooldown_s=settings.cooldown_s,
        remind_every_s=settings.remind_every_s,
        now=now,
    )
    if kind is None:
        log.info("incident %s already paged within the cooldown; not paging again", incident.key)
        return None
    message = breach_message(
        incident,
        kind,
        verdict,
        report_path=report_path,
        retrain_flow_run_id=retrain_flow_run_id,
        auto_approved=auto_approved,
    )
    report = deliver(message, settings, state, sleep=sleep, sender=sender)
    _record_failure(state, incident, report)
    if report.all_failed:
        # Nobody was reached: the next monitor run pages again instead of waiting out the
        # cooldown as if on-call had been told.
        state.update_incident(incident.id, last_notified_at=None)
        log.error(
            "incident %s: no alert URL reached; the next monitor run pages again", incident.key
        )
    return report


def notify_resolved(
    state: StateDB,
    settings: AlertSettings,
    incident: Incident,
    *,
    report_path: str | None,
    detail: str = "",
    sleep: Callable[[float], None] = time.sleep,
    sender: Callable[[str, str, str, str], bool] = _send_once,
) -> DeliveryReport:
    """Tell the on-call person a (paged) incident is resolved: nothing breaches any more."""
    outcome = f" Retrain: {incident.retrain_outcome}." if incident.retrain_outcome else ""
    message = AlertMessage(
        incident_key=incident.key,
        kind="resolved",
        title=f"RESOLVED: driftloop incident {incident.key}",
        body=(
            f"The monitor verdict no longer breaches; incident {incident.key} is resolved."
            f"{outcome}{' ' + detail if detail else ''}"
        ),
        severity="success",
        evidence={"retrain_outcome": incident.retrain_outcome or "-"},
        report_path=report_path,
    )
    report = deliver(message, settings, state, sleep=sleep, sender=sender)
    _record_failure(state, incident, report)
    return report


def notify(
    state: StateDB,
    settings: AlertSettings,
    incident_key: str,
    kind: str,
    title: str,
    body: str,
    *,
    severity: str = "info",
    evidence: Mapping[str, Any] | None = None,
    report_path: str | None = None,
    approve_command: str | None = None,
    reject_command: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    sender: Callable[[str, str, str, str], bool] = _send_once,
) -> DeliveryReport:
    """Send a one-off message (approval requested, retrain outcome, expiry): not deduplicated."""
    message = AlertMessage(
        incident_key=incident_key,
        kind=kind,
        title=title,
        body=body,
        severity=severity,
        evidence=dict(evidence or {}),
        report_path=report_path,
        approve_command=approve_command,
        reject_command=reject_command,
    )
    report = deliver(message, settings, state, sleep=sleep, sender=sender)
    incident = state.get_open(incident_key)
    if incident is not None:
        _record_failure(state, incident, report)
    return report


def _record_failure(state: StateDB, incident: Incident, report: DeliveryReport) -> None:
    if report.all_failed:
        errors = "; ".join(f"{t.target}: {t.error}" for t in report.targets)
        state.update_incident(incident.id, last_delivery_error=f"all deliveries failed: {errors}")
    elif report.targets:
        state.update_incident(incident.id, last_delivery_error=None)
