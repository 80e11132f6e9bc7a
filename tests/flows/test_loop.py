"""The whole loop with the tiny model: traffic with a topic shift -> breach -> one page -> paused
retrain -> approval as run input -> fine-tune -> gate -> promotion (or rejection)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from driftloop.settings import Settings, load_settings
from tests.conftest import TinyModel
from tests.flows.conftest import AlertEndpoint

pytestmark = pytest.mark.integration


def _settings(base: Settings, tiny: TinyModel, url: str) -> Settings:
    data = base.model_dump(mode="json")
    data["model"]["base_model"] = str(tiny.path)
    data["model"]["device"] = "cpu"
    data["alerts"].update({"urls": [url], "retries": 1, "backoff_s": 0.01})
    data["demo"].update({"days": 5, "rows_per_day": 120, "shift_start_day": 3})
    data["retrain"].update({"min_rows": 20, "epochs": 1.0, "max_train_rows": 200, "min_gain": -1.0})
    data["retrain"]["max_forgetting"] = 1.0
    data["drift"].update({"reference_size": 200, "sample_size": 120})
    return load_settings(**data)


def _breach_setup(settings: Settings, tiny: TinyModel) -> tuple[Any, Any]:
    from driftloop.simulate import simulate_traffic
    from flows.wiring import open_store_and_state
    from retrain.bootstrap import bootstrap
    from retrain.registry import Registry

    bootstrap(settings, base_model_dir=tiny.path, progress=False, epochs=1.0)
    store, state = open_store_and_state(settings)
    registry = Registry(settings.registry)
    model, tokenizer, info = registry.load_champion(settings.model.labels)
    summary = simulate_traffic(
        settings,
        store,
        model=model,
        tokenizer=tokenizer,
        model_name=settings.registry.model_name,
        model_version=str(info.version),
        progress=False,
    )
    return summary, state


def _run_loop(settings: Settings, tiny: TinyModel, endpoint: AlertEndpoint, approve: bool) -> None:
    from prefect.flow_runs import resume_flow_run

    from flows.monitor_flow import monitor_flow
    from flows.retrain_flow import retrain_flow
    from flows.wiring import settings_overrides
    from retrain.registry import Registry

    summary, state = _breach_setup(settings, tiny)
    overrides = settings_overrides(settings)
    shifted_start = summary.start + timedelta(days=settings.demo.shift_start_day)
    end = summary.start + timedelta(days=settings.demo.days)
    outcome = monitor_flow(window_start=shifted_start, window_end=end, overrides=overrides)
    assert outcome["status"] == "breach", outcome["verdict"]
    assert outcome["paged"] == "breach"
    pages = [p for p in endpoint.posts if "breach" in p["title"].lower()]
    assert len(pages) == 1
    # A second run within the cooldown pages nobody.
    again = monitor_flow(window_start=shifted_start, window_end=end, overrides=overrides)
    assert again["paged"] is None and again["incident_key"] == outcome["incident_key"]
    assert len([p for p in endpoint.posts if "breach" in p["title"].lower()]) == 1
    # The retrain pauses for approval; send the decision as run input.
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            retrain_flow(
                incident_key=outcome["incident_key"], overrides=overrides, poll_interval_s=1
            )
        )
    )
    thread.start()
    deadline = time.monotonic() + 120
    run_id = None
    while time.monotonic() < deadline and run_id is None:
        incident = state.get_open(outcome["incident_key"])
        if incident and incident.approval == "pending" and incident.retrain_flow_run_id:
            run_id = incident.retrain_flow_run_id
        time.sleep(0.5)
    assert run_id, "the retrain flow never paused"
    from uuid import UUID

    for _ in range(60):
        try:
            resume_flow_run(
                UUID(run_id),
                run_input={"approve": approve, "approver": "alice", "reason": "test"},
            )
            break
        except Exception:
            time.sleep(0.5)
    thread.join(timeout=600)
    registry = Registry(settings.registry)
    champion = registry.champion()
    assert champion is not None
    if approve:
        # min_gain=-1 and max_forgetting=1: the gate cannot refuse.
        assert result["status"] == "promoted", result
        assert result["approver"] == "alice"
        assert champion.version == result["version"] != "1"
        assert champion.tags["approver"] == "alice" and champion.tags["reason"] == "test"
        # Trained on the breaching window's labelled rows (labels as of the approval).
        assert result["window_start"] == outcome["window_start"]
    else:
        assert result["status"] == "rejected"
        assert champion.version == "1"


def test_loop_approve(
    harness: None, settings: Settings, tiny_model: TinyModel, alert_endpoint: AlertEndpoint
) -> None:
    _run_loop(_settings(settings, tiny_model, alert_endpoint.url), tiny_model, alert_endpoint, True)


def test_loop_reject(
    harness: None, settings: Settings, tiny_model: TinyModel, alert_endpoint: AlertEndpoint
) -> None:
    _run_loop(
        _settings(settings, tiny_model, alert_endpoint.url), tiny_model, alert_endpoint, False
    )


def test_loop_dead_alert_endpoint(
    harness: None, settings: Settings, tiny_model: TinyModel, alert_endpoint: AlertEndpoint
) -> None:
    from flows.monitor_flow import monitor_flow
    from flows.wiring import settings_overrides

    s = _settings(settings, tiny_model, alert_endpoint.url)
    s = s.model_copy(update={"alerts": s.alerts.model_copy(update={"retries": 2})})
    summary, state = _breach_setup(s, tiny_model)
    alert_endpoint.stop()  # on-call's endpoint is down: connection refused
    overrides = settings_overrides(s)
    window = {
        "window_start": summary.start + timedelta(days=s.demo.shift_start_day),
        "window_end": summary.start + timedelta(days=s.demo.days),
        "overrides": overrides,
    }
    outcome = monitor_flow(**window)
    assert outcome["status"] == "breach" and outcome["paged"] == "breach"
    # The incident is recorded whatever the delivery did, with why nobody was reached.
    incident = state.get_open(outcome["incident_key"])
    assert incident is not None and incident.notify_count == 1
    assert "all deliveries failed" in (incident.last_delivery_error or "")
    rows = state.deliveries(outcome["incident_key"])
    assert [(r["target"] == "outbox", r["ok"], r["attempts"]) for r in rows] == [
        (True, True, 1),
        (False, False, 3),  # 1 + retries
    ]
    assert alert_endpoint.requests == 0 and alert_endpoint.posts == []
    outbox = [json.loads(line) for line in s.alerts.outbox.read_text().splitlines()]
    assert [m["kind"] for m in outbox] == ["breach"]
    # The next run, within the cooldown, pages again (nobody was told) for the same incident.
    again = monitor_flow(**window)
    assert again["incident_key"] == outcome["incident_key"] and again["paged"] == "breach"
    assert len(state.deliveries(outcome["incident_key"])) == 4
