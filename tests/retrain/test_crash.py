"""kill -9 in the middle of a retrain or of a promotion, in a real child process.

Each test runs a child Python process against a temp MLflow SQLite store, waits until the child
writes a marker file at a chosen point (and sleeps there), sends SIGKILL, and then checks from
the parent what a restarted driftloop would see: ``champion`` exists and points at a version
whose artifact loads, no version or alias points at a half-written model, and (for promotion)
running ``promote`` again finishes the job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from driftloop.settings import LABELS, Settings
from retrain.bootstrap import bootstrap
from retrain.pipeline import retrain
from retrain.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, Registry
from tests.retrain.test_pipeline import _fast, _production

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.name != "posix", reason="SIGKILL")]

REPO = Path(__file__).resolve().parents[2]
#: How long the child may take to reach its pause point (imports + tiny training, shared CPU).
MARKER_TIMEOUT_S = 240.0

# The child: load the settings, install the pause hook, run the step. At the pause point it
# writes the marker file and sleeps until the parent kills it.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    cfg = json.loads(Path(sys.argv[1]).read_text())
    marker = Path(cfg["marker"])

    def pause(where):
        marker.write_text(where)
        time.sleep(600)
        raise SystemExit("the parent never killed the child")

    from driftloop.settings import Settings
    settings = Settings.model_validate(cfg["settings"])

    if cfg["mode"] == "train":
        import pandas as pd
        from transformers import TrainerCallback
        from retrain.pipeline import retrain

        class PauseAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == cfg["step"]:
                    pause(f"training step {state.global_step}")

        callbacks = []
        if cfg["where"] == "training":
            callbacks = [PauseAt()]
        else:  # registration: after the version row exists, before its alias is set
            from mlflow import MlflowClient
            real_create = MlflowClient.create_model_version

            def create_then_pause(self, *args, **kwargs):
                mv = real_create(self, *args, **kwargs)
                pause(f"registered version {mv.version}, no alias yet")

            MlflowClient.create_model_version = create_then_pause
        retrain(
            settings,
            pd.read_pickle(cfg["production"]),
            window="crash-test",
            approver="crash-test",
            reason="kill -9",
            progress=False,
            epochs=1,
            max_steps=cfg["max_steps"],
            callbacks=callbacks,
        )
    else:
        from mlflow import MlflowClient
        from retrain.registry import Registry

        calls = {"n": 0}

        def wrap(name):
            real = getattr(MlflowClient, name)

            def wrapped(self, *args, **kwargs):
                i = calls["n"]
                calls["n"] += 1
                if cfg["when"] == "before" and i == cfg["step"]:
                    pause(f"before alias call {i}: {name}{args[1:]}")
                out = real(self, *args, **kwargs)
                if cfg["when"] == "after" and i == cfg["step"]:
                    pause(f"after alias call {i}: {name}{args[1:]}")
                return out

            setattr(MlflowClient, name, wrapped)

        wrap("set_registered_model_alias")
        wrap("delete_registered_model_alias")
        Registry(settings.registry).promote(cfg["version"], approver="crash-test", reason="kill -9")
    raise SystemExit("the child finished without reaching its pause point")
    """
)


def _kill_child_at_marker(tmp_path: Path, s: Settings, **cfg: Any) -> str:
    """Run the child, SIGKILL it once its marker appears; return the marker's text."""
    marker = tmp_path / "paused.marker"
    config = tmp_path / "child.json"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    config.write_text(
        json.dumps({"settings": s.model_dump(mode="json"), "marker": str(marker), **cfg})
    )
    child_tmp = tmp_path / "child-tmp"
    child_tmp.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(child_tmp),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(config)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + MARKER_TIMEOUT_S
            while not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(
                        f"child exited ({proc.returncode}) before its pause point:\n"
                        + log.read_text(errors="replace")[-4000:]
                    )
                if time.monotonic() > deadline:
                    pytest.fail(f"child never reached its pause point in {MARKER_TIMEOUT_S}s")
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return marker.read_text()


def _versions(reg: Registry) -> dict[str, tuple[str, ...]]:
    """Every registered version and its aliases."""
    found = reg.client.search_model_versions(f"name='{reg.name}'")
    return {str(v.version): tuple(sorted(reg.version(v.version).aliases)) for v in found}


def _assert_champion_loads(reg: Registry, version: str) -> None:
    model, _tokenizer, info = reg.load_champion(LABELS)
    assert info.version == version and model.config.num_labels == len(LABELS)


def _assert_every_alias_loads(reg: Registry) -> None:
    for info in (reg.champion(), reg.challenger(), reg.previous_champion()):
        if info is not None:
            reg.verify(info.version, LABELS)


@pytest.fixture
def airline_rows(demo_rows) -> list[dict[str, object]]:
    """Enough airline rows for a 160-row bootstrap."""
    return [r for r in demo_rows if r["topic"] == "airline"][:1200]


def _bootstrap_then_kill_retrain(
    tmp_path: Path, settings: Settings, tiny_model, demo_rows, airline_rows, where: str
) -> tuple[Settings, Registry, str, dict[str, str]]:
    """Bootstrap v1, kill a retrain child at ``where``; return the registry and killed runs."""
    s = _fast(settings, tiny_model, min_gain=-1.0, max_forgetting=1.0, bias_tolerance=1.0)
    bootstrap(s, rows=airline_rows, progress=False, epochs=1)
    production = tmp_path / "production.pkl"
    _production(demo_rows).to_pickle(production)

    paused = _kill_child_at_marker(
        tmp_path, s, mode="train", where=where, step=2, max_steps=40, production=str(production)
    )

    reg = Registry(s.registry)
    assert reg.champion().version == "1"
    _assert_champion_loads(reg, "1")
    _assert_every_alias_loads(reg)
    assert reg.previous_champion() is None and reg.challenger() is None
    # Nobody could mark the killed run: MLflow leaves it RUNNING, tagged with its window and
    # approver so an operator can tell what it was.
    runs = reg.client.search_runs([reg.experiment_id()])
    killed = {r.info.run_name: r.info.status for r in runs if r.info.run_name != "bootstrap"}
    (parent,) = [r for r in runs if r.info.run_name == "retrain"]
    assert parent.data.tags["window"] == "crash-test"
    assert parent.data.tags["approver"] == "crash-test"
    return s, reg, paused, killed


def test_kill_during_training_registers_nothing(
    tmp_path: Path, settings: Settings, tiny_model, demo_rows, airline_rows
) -> None:
    s, reg, paused, killed = _bootstrap_then_kill_retrain(
        tmp_path, settings, tiny_model, demo_rows, airline_rows, "training"
    )
    assert paused.startswith("training step 2")
    assert killed == {"retrain": "RUNNING", "finetune": "RUNNING"}
    # No version: the half-trained weights lived only in the child's temp dir.
    assert _versions(reg) == {"1": (CHAMPION,)}

    # Nothing the kill left behind blocks the next retrain.
    again = retrain(
        s,
        _production(demo_rows),
        window="after-kill",
        approver="crash-test",
        reason="retry",
        progress=False,
        epochs=1,
        max_steps=4,
    )
    assert again.version == "2" and again.promoted
    _assert_champion_loads(reg, "2")


def test_kill_during_registration_leaves_only_complete_versions(
    tmp_path: Path, settings: Settings, tiny_model, demo_rows, airline_rows
) -> None:
    _s, reg, paused, killed = _bootstrap_then_kill_retrain(
        tmp_path, settings, tiny_model, demo_rows, airline_rows, "registration"
    )
    assert paused.startswith("registered version 2")
    assert killed == {"retrain": "RUNNING", "finetune": "FINISHED"}
    # The version row exists but no alias was set: its artifact was logged before the row was
    # created, so it is complete; nothing points at it and champion is untouched.
    assert _versions(reg) == {"1": (CHAMPION,), "2": ()}
    reg.verify("2", LABELS)


# Promote makes these alias calls, in this order, after the version is verified and tagged:
# 0 set champion -> new, 1 set previous-champion -> old, 2 delete challenger.
PROMOTION_STEPS = {
    "before-champion": ("before", 0),
    "before-previous": ("before", 1),
    "before-challenger-delete": ("before", 2),
    "after-all-aliases": ("after", 2),
}


@pytest.mark.parametrize("step", list(PROMOTION_STEPS), ids=list(PROMOTION_STEPS))
def test_kill_during_promotion_keeps_a_champion_and_recovers(
    tmp_path: Path, settings: Settings, tiny_model, step: str
) -> None:
    s = _fast(settings, tiny_model)
    reg = Registry(s.registry)
    # The promotion path does not need a trained champion: register the tiny model twice.
    with reg.run("bootstrap") as run:
        v1 = reg.register(run, tiny_model.path).version
    reg.promote(v1, approver="setup", reason="first champion")
    with reg.run("retrain") as run:
        v2 = reg.register(run, tiny_model.path).version
    assert (v1, v2) == ("1", "2") and _versions(reg) == {"1": (CHAMPION,), "2": (CHALLENGER,)}

    when, index = PROMOTION_STEPS[step]
    paused = _kill_child_at_marker(tmp_path, s, mode="promote", version=v2, when=when, step=index)
    assert paused.startswith(f"{when} alias call {index}")

    # Invariant right after the kill: a champion exists, is v1 or v2, and loads; every alias
    # points at a loadable version.
    reg = Registry(s.registry)
    champion = reg.champion()
    assert champion is not None and champion.version in {v1, v2}
    assert champion.version == (v1 if step == "before-champion" else v2)
    _assert_champion_loads(reg, champion.version)
    _assert_every_alias_loads(reg)

    # Recovery: promoting the same version again completes the promotion.
    reg.promote(v2, approver="crash-test", reason="retry after kill -9")
    assert _versions(reg) == {"1": (PREVIOUS_CHAMPION,), "2": (CHAMPION,)}
    _assert_champion_loads(reg, v2)
    assert reg.version(v2).tags["previous_champion"] == v1
    assert reg.rollback(by="crash-test", reason="check the chain").version == v1
