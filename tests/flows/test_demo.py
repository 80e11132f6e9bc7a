"""``driftloop demo`` with the tiny model: its own namespace, and a second run that reuses the
bootstrap champion and replays the same traffic from scratch."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from driftloop.settings import Settings, load_settings
from tests.conftest import TinyModel

pytestmark = pytest.mark.integration


def _tiny_demo(base: Settings, tiny: TinyModel) -> Settings:
    data = base.model_dump(mode="json")
    data["model"].update({"base_model": str(tiny.path), "device": "cpu", "max_length": 32})
    data["alerts"]["urls"] = ["json://127.0.0.1:9/never-paged"]  # the demo must not use it
    data["demo"].update({"days": 3, "rows_per_day": 80, "shift_start_day": 2})
    data["retrain"].update({"min_rows": 20, "epochs": 1.0, "max_train_rows": 200})
    data["drift"].update({"reference_size": 200, "sample_size": 80})
    return load_settings(**data)


def _bootstrap_versions(registry) -> list[str]:
    versions = registry.client.search_model_versions(f"name='{registry.name}'")
    return [str(v.version) for v in versions if (v.tags or {}).get("kind") == "bootstrap"]


def test_demo_namespace_and_rerun(harness: None, settings: Settings, tiny_model: TinyModel) -> None:
    from flows.demo import DEMO_DIR, demo_settings, run_demo
    from flows.wiring import open_store_and_state
    from retrain.registry import Registry

    base = _tiny_demo(settings, tiny_model)
    demo = demo_settings(base)
    assert demo.home == base.home / DEMO_DIR and demo.alerts.urls == ()
    assert demo.retrain.auto_approve and not base.retrain.auto_approve
    first = Console(file=io.StringIO(), width=200)
    assert run_demo(base, first) == 0
    out = first.file.getvalue()

    # Nothing outside <home>/demo: not the configured store, MLflow store or outbox.
    assert not Path(base.store.url.removeprefix("sqlite:///")).exists()
    assert not Path(base.registry.tracking_uri.removeprefix("sqlite:///")).exists()
    assert not base.alerts.outbox.exists()
    assert {p.name for p in demo.home.iterdir()} >= {"driftloop.db", "mlflow.db", "reports"}
    store, _ = open_store_and_state(demo)
    assert store.counts()["predictions"] == 3 * 80
    registry = Registry(demo.registry)
    assert _bootstrap_versions(registry) == ["1"]
    assert "1. champion" in out and "bootstrap version v1" in out
    for day in range(3):
        assert f"day {day}" in out
    assert "3. summary" in out and "report.html" in out

    # Second run: no new bootstrap, champion back on v1, traffic replayed from scratch.
    second = Console(file=io.StringIO(), width=200)
    assert run_demo(base, second) == 0
    out2 = second.file.getvalue()
    assert _bootstrap_versions(registry) == ["1"]
    assert "v1" in out2 and ("re-pointed" in out2 or "reused, no retraining" in out2)
    assert "served by v1" in out2.split("day 0")[1].splitlines()[0]
    store, _ = open_store_and_state(demo)
    assert store.counts()["predictions"] == 3 * 80
