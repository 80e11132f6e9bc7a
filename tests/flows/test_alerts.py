"""Alerts: deduplication, cooldown, reminders, resolution, masking, retries and backoff."""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from driftloop.settings import AlertSettings
from flows.alerts import deliver, mask_url, notify_breach, notify_resolved, scrub
from flows.state import StateDB, incident_key
from tests.flows.conftest import AlertEndpoint

VERDICT = {
    "status": "breach",
    "breached": ["embedding_drift", "novelty"],
    "checks": [
        {"name": "embedding_drift", "p_value": 1e-6, "alert": True, "statistic": 0.4},
        {"name": "novelty", "p_value": 1e-4, "alert": True},
        {"name": "decay", "p_value": 0.4, "alert": False},
    ],
}
T0 = datetime(2025, 1, 1, 12, 0, 0)


@pytest.fixture
def state(tmp_path: Path) -> StateDB:
    return StateDB(create_engine(f"sqlite:///{tmp_path}/state.db"))


def _alerts(tmp_path: Path, *urls: str, **kw: object) -> AlertSettings:
    values: dict[str, object] = {
        "urls": urls,
        "outbox": tmp_path / "outbox.jsonl",
        "cooldown_s": 3600,
        "remind_every_s": 6 * 3600,
        "retries": 2,
        "backoff_s": 0.01,
    }
    values.update(kw)
    return AlertSettings(**values)


def _open(state: StateDB, now: datetime = T0) -> object:
    key = incident_key("clf", "1")
    incident, _ = state.open_incident(
        key, model_name="clf", model_version="1", verdict=VERDICT, now=now
    )
    return incident


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_open_incident_is_unique_under_concurrency(state: StateDB) -> None:
    key = incident_key("clf", "1")
    created: list[bool] = []

    def worker() -> None:
        _, was_created = state.open_incident(
            key, model_name="clf", model_version="1", verdict=VERDICT
        )
        created.append(was_created)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert created.count(True) == 1
    assert state.count_incidents() == 1
    assert state.claim_retrain(key, approval="pending") is True
    assert state.claim_retrain(key, approval="pending") is False


def test_pages_once_then_reminds_then_resolves(
    state: StateDB, tmp_path: Path, alert_endpoint: AlertEndpoint
) -> None:
    settings = _alerts(tmp_path, alert_endpoint.url)
    incident = _open(state)
    kinds = []
    # A breach that persists for ten runs, one every 10 minutes: one page.
    for i in range(10):
        now = T0 + timedelta(minutes=10 * i)
        report = notify_breach(
            state,
            settings,
            incident,
            VERDICT,
            report_path="/tmp/r.html",
            retrain_flow_run_id="abc-123",
            now=now,
        )
        kinds.append(None if report is None else report.kind)
    assert kinds == ["breach"] + [None] * 9
    assert len(alert_endpoint.posts) == 1
    post = alert_endpoint.posts[0]
    assert "embedding_drift" in post["message"]
    assert "driftloop approve abc-123 --by YOUR_NAME" in post["message"]
    assert "--reject" in post["message"]
    assert "/tmp/r.html" in post["message"]
    # After remind_every_s the same incident reminds once.
    later = T0 + timedelta(hours=6, minutes=1)
    report = notify_breach(
        state, settings, incident, VERDICT, report_path=None, retrain_flow_run_id=None, now=later
    )
    assert report is not None and report.kind == "reminder"
    assert (
        notify_breach(
            state,
            settings,
            incident,
            VERDICT,
            report_path=None,
            retrain_flow_run_id=None,
            now=later + timedelta(minutes=5),
        )
        is None
    )
    assert len(alert_endpoint.posts) == 2
    assert alert_endpoint.posts[1]["title"].startswith("REMINDER")
    # Back to ok: a resolution message, and the incident is closed.
    resolved = state.resolve_open("clf")
    assert [r.key for r in resolved] == [incident.key]
    notify_resolved(state, settings, resolved[0], report_path=None)
    assert alert_endpoint.posts[-1]["title"].startswith("RESOLVED")
    assert state.get_open(incident.key) is None
    assert state.resolve_open("clf") == []
    # The outbox holds every message, one JSON object a line.
    lines = (tmp_path / "outbox.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["breach", "reminder", "resolved"]
    # A new breach after resolution is a new incident that pages again.
    incident2, created = state.open_incident(
        incident.key, model_name="clf", model_version="1", verdict=VERDICT
    )
    assert created and incident2.id != incident.id


def test_outbox_only_without_urls(state: StateDB, tmp_path: Path) -> None:
    settings = _alerts(tmp_path)
    incident = _open(state)
    report = notify_breach(
        state, settings, incident, VERDICT, report_path=None, retrain_flow_run_id=None, now=T0
    )
    assert report is not None and report.targets == () and not report.all_failed
    line = json.loads((tmp_path / "outbox.jsonl").read_text())
    assert line["kind"] == "breach"
    assert "driftloop retrain --incident" in line["approve_command"]


def test_secrets_are_masked_everywhere(state: StateDB, tmp_path: Path) -> None:
    secret = "SuperSecretToken123"
    url = f"json://user:{secret}@127.0.0.1:{_free_port()}/hook"
    slack = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#alerts"
    assert secret not in mask_url(url)
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in mask_url(slack)
    assert secret not in scrub(f"failed posting to {url}", [url])
    settings = _alerts(tmp_path, url, slack, retries=0)
    incident = _open(state)

    def sender(u: str, title: str, body: str, severity: str) -> bool:
        raise ConnectionError(f"cannot reach {u}")

    report = notify_breach(
        state,
        settings,
        incident,
        VERDICT,
        report_path=None,
        retrain_flow_run_id=None,
        now=T0,
        sender=sender,
    )
    assert report is not None and report.all_failed
    stored = json.dumps(state.deliveries(), default=str)
    stored += (tmp_path / "outbox.jsonl").read_text()
    stored += str(state.get_open(incident.key))
    for leaked in (secret, "TIiajkdnlazkcOXrIdevi7FQ", url, slack):
        assert leaked not in stored


def test_retries_with_backoff_then_success(
    state: StateDB, tmp_path: Path, alert_endpoint: AlertEndpoint
) -> None:
    alert_endpoint.fail_first = 2
    delays: list[float] = []
    settings = _alerts(tmp_path, alert_endpoint.url, retries=3, backoff_s=0.5)
    incident = _open(state)
    report = notify_breach(
        state,
        settings,
        incident,
        VERDICT,
        report_path=None,
        retrain_flow_run_id=None,
        now=T0,
        sleep=delays.append,
    )
    assert report is not None
    assert report.targets[0].ok and report.targets[0].attempts == 3
    assert delays == [0.5, 1.0]
    assert len(alert_endpoint.posts) == 1
    assert state.get_open(incident.key).last_delivery_error is None  # type: ignore[union-attr]


def test_dead_endpoint_still_records_incident(state: StateDB, tmp_path: Path) -> None:
    url = f"json://127.0.0.1:{_free_port()}/"
    delays: list[float] = []
    settings = _alerts(tmp_path, url, retries=2, backoff_s=0.25)
    incident = _open(state)
    report = notify_breach(
        state,
        settings,
        incident,
        VERDICT,
        report_path=None,
        retrain_flow_run_id=None,
        now=T0,
        sleep=delays.append,
    )
    assert report is not None
    assert report.all_failed and report.targets[0].attempts == 3
    assert delays == [0.25, 0.5]
    recorded = state.get_open(incident.key)
    assert recorded is not None and recorded.notify_count == 1
    assert recorded.last_delivery_error and "all deliveries failed" in recorded.last_delivery_error
    rows = state.deliveries(incident.key)
    assert (rows[0]["target"], rows[0]["ok"]) == ("outbox", True)
    assert rows[1]["ok"] is False and rows[1]["attempts"] == 3


def test_a_page_that_reached_nobody_is_sent_again_on_the_next_run(
    state: StateDB, tmp_path: Path, alert_endpoint: AlertEndpoint
) -> None:
    # The endpoint answers 500 to the first three requests: the first page's three attempts.
    alert_endpoint.fail_first = 3
    settings = _alerts(tmp_path, alert_endpoint.url, retries=2)
    incident = _open(state)

    def page(minutes: int) -> str | None:
        report = notify_breach(
            state,
            settings,
            incident,
            VERDICT,
            report_path=None,
            retrain_flow_run_id=None,
            now=T0 + timedelta(minutes=minutes),
            sleep=lambda _s: None,
        )
        return None if report is None else report.kind

    assert page(0) == "breach"
    assert alert_endpoint.posts == [] and alert_endpoint.requests == 3
    # Ten minutes later, well within the cooldown: nobody was told, so it pages again.
    assert page(10) == "breach"
    assert len(alert_endpoint.posts) == 1 and alert_endpoint.requests == 4
    recorded = state.get_open(incident.key)
    assert recorded is not None and recorded.last_delivery_error is None
    # Delivered now: the cooldown holds from here.
    assert page(20) is None and alert_endpoint.requests == 4
    oks = [(r["target"] != "outbox", r["ok"]) for r in state.deliveries(incident.key)]
    assert oks == [(False, True), (True, False), (False, True), (True, True)]


def test_deliver_real_backoff_is_exponential(tmp_path: Path) -> None:
    # The default sleep is real: two retries at 0.01 s and 0.02 s, against a refused port.
    from flows.alerts import AlertMessage

    settings = _alerts(tmp_path, f"json://127.0.0.1:{_free_port()}/", retries=2)
    message = AlertMessage(incident_key="k", kind="breach", title="t", body="b")
    report = deliver(message, settings)
    assert report.all_failed and report.targets[0].attempts == 3
