"""deploy/: every YAML parses, and each deployment's entrypoint is a Prefect flow with its parameters."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAMLS = sorted(DEPLOY.glob("*.y*ml"))


def test_deploy_has_yaml() -> None:
    names = {p.name for p in YAMLS}
    assert {"prefect.yaml", "docker-compose.yml"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)


def _deployments() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in YAMLS:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.extend(data.get("deployments") or [])
    return out


def test_entrypoints_are_flows_with_known_parameters() -> None:
    from prefect import Flow

    deployments = _deployments()
    assert {d["name"] for d in deployments} >= {"monitor", "retrain"}
    for dep in deployments:
        file_part, func_name = dep["entrypoint"].split(":")
        module_name = file_part.removesuffix(".py").replace("/", ".")
        obj = getattr(importlib.import_module(module_name), func_name)
        assert isinstance(obj, Flow), f"{dep['entrypoint']} is not a Prefect flow"
        params = set(inspect.signature(obj.fn).parameters)
        unknown = set(dep.get("parameters") or {}) - params
        assert not unknown, f"{dep['name']}: unknown parameters {unknown}"
        assert dep["work_pool"]["name"]


def test_monitor_deployment_is_scheduled() -> None:
    monitor = next(d for d in _deployments() if d["name"] == "monitor")
    assert monitor["schedules"][0]["cron"]


def test_compose_services() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    assert {"postgres", "prefect-server", "mlflow", "worker"} <= set(compose["services"])
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    torch_line = dockerfile.index("torch==2.13.0")
    assert torch_line < dockerfile.index('pip install ".[postgres]"')
