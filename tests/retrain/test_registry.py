"""The MLflow registry: aliases, idempotent promotion, rollback, broken artifacts, dead server."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from driftloop.settings import RegistrySettings, Settings
from retrain.errors import ModelArtifactError, NoChampionError, RegistryUnavailable
from retrain.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, Registry


def _register(registry: Registry, model_dir: Path, n: int) -> str:
    with registry.run(f"r{n}") as run:
        return registry.register(run, model_dir, tags={"n": n}).version


def test_aliases_promotion_and_rollback(settings: Settings, tiny_model) -> None:
    reg = Registry(settings.registry)
    assert reg.champion() is None
    v1 = _register(reg, tiny_model.path, 1)
    assert reg.challenger().version == v1 and reg.champion() is None
    reg.promote(v1, approver="alice", reason="first")
    assert reg.champion().version == v1 and reg.challenger() is None
    assert reg.champion().tags["approver"] == "alice"
    assert reg.champion_uri() == f"models:/{settings.registry.model_name}@champion"

    v2 = _register(reg, tiny_model.path, 2)
    reg.promote(v2, approver="bob", reason="better")
    again = reg.promote(v2, approver="eve", reason="twice")  # idempotent
    assert again.tags["approver"] == "bob"
    assert reg.champion().version == v2 and reg.previous_champion().version == v1
    assert set(reg.version(v2).aliases) == {CHAMPION}

    model, _tokenizer, info = reg.load_champion()
    assert info.version == v2 and model.config.num_labels == 3

    restored = reg.rollback(by="carol", reason="regression")
    assert restored.version == v1 and reg.champion().version == v1
    assert reg.version(v2).tags["rolled_back_by"] == "carol"
    assert reg.previous_champion() is None
    with pytest.raises(NoChampionError):
        reg.rollback(by="carol", reason="again")
    assert {CHALLENGER, PREVIOUS_CHAMPION}.isdisjoint(reg.version(v1).aliases)


def test_corrupt_or_missing_artifact_never_becomes_champion(settings: Settings, tiny_model) -> None:
    reg = Registry(settings.registry)
    v1 = _register(reg, tiny_model.path, 1)
    reg.promote(v1, approver="a", reason="r")
    v2 = _register(reg, tiny_model.path, 2)
    local = Path(reg.version(v2).source.removeprefix("file://"))
    (local / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelArtifactError):
        reg.promote(v2, approver="a", reason="r")
    assert reg.champion().version == v1

    v3 = _register(reg, tiny_model.path, 3)
    shutil.rmtree(Path(reg.version(v3).source.removeprefix("file://")))
    with pytest.raises(ModelArtifactError):
        reg.promote(v3, approver="a", reason="r")
    assert reg.champion().version == v1
    assert reg.load_champion()[2].version == v1


def test_missing_champion_artifact_is_a_clear_error(settings: Settings, tiny_model) -> None:
    reg = Registry(settings.registry)
    v1 = _register(reg, tiny_model.path, 1)
    reg.promote(v1, approver="a", reason="r")
    shutil.rmtree(Path(reg.version(v1).source.removeprefix("file://")))
    with pytest.raises(ModelArtifactError, match=r"config\.json|cannot download"):
        reg.load_champion()


def test_unreachable_tracking_server_fails_fast() -> None:
    reg = Registry(RegistrySettings(tracking_uri="http://127.0.0.1:9"))
    started = time.perf_counter()
    with pytest.raises(RegistryUnavailable, match="does not answer"):
        reg.champion()
    assert time.perf_counter() - started < 10
