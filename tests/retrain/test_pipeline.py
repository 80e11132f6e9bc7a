"""End to end against a real MLflow store: bootstrap -> retrain -> gate -> promote -> rollback."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from driftloop.settings import LABELS, Settings
from retrain.bootstrap import bootstrap, load_reference
from retrain.errors import PromotionError, TrainingDataError, TrainingFailed
from retrain.pipeline import retrain
from retrain.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, Registry

pytestmark = pytest.mark.integration


def _fast(settings: Settings, tiny_model, **retrain: object) -> Settings:
    """Tiny model, few rows, short sequences; ``retrain`` overrides gate thresholds."""
    return settings.model_copy(
        update={
            "model": settings.model.model_copy(
                update={"base_model": tiny_model.path, "max_length": 32, "device": "cpu"}
            ),
            "retrain": settings.retrain.model_copy(
                update={"max_train_rows": 160, "min_rows": 40, "batch_size": 32, **retrain}
            ),
            "drift": settings.drift.model_copy(update={"reference_size": 80}),
        }
    )


def _production(demo_rows, n: int = 120, seed: int = 3) -> pd.DataFrame:
    other = [r for r in demo_rows if r["topic"] not in ("airline", "other")]
    rows = random.Random(seed).sample(other, n)
    return pd.DataFrame(
        {
            "request_id": [f"req-{seed}-{i}" for i in range(n)],
            "timestamp": pd.Timestamp("2026-01-02", tz="UTC"),
            "text": [r["text"] for r in rows],
            "label": [r["label_name"] for r in rows],
            "segments": [{"topic": r["topic"]} for r in rows],
        }
    )


@pytest.fixture
def airline_rows(demo_rows) -> list[dict[str, object]]:
    """A slice of the corpus: enough airline rows for a 160-row bootstrap."""
    return [r for r in demo_rows if r["topic"] == "airline"][:1200]


def test_bootstrap_retrain_promote_rollback(
    settings: Settings, tiny_model, demo_rows, airline_rows
) -> None:
    s = _fast(settings, tiny_model, min_gain=-1.0, max_forgetting=1.0, bias_tolerance=1.0)
    boot = bootstrap(s, rows=airline_rows, progress=False, epochs=1)
    reg = Registry(s.registry)
    champ = reg.champion()
    assert boot.version == champ.version == "1"
    assert champ.tags["window"] == "reference" and champ.tags["approver"] == "bootstrap"
    reference = load_reference(reg)
    assert {"text", "label", "probabilities", "topic", "airline"} <= set(reference.columns)
    assert len(reference) == boot.counts["reference"]

    out = retrain(
        s,
        _production(demo_rows),
        window="day-2",
        approver="alice",
        reason="drift",
        progress=False,
        epochs=1,
    )
    assert out.promoted and out.version == "2" and out.champion_after == "2"
    v2 = reg.version("2")
    assert v2.aliases == (CHAMPION,)
    assert (
        v2.tags["approver"] == "alice"
        and v2.tags["reason"] == "drift"
        and v2.tags["window"] == "day-2"
    )
    assert v2.tags["gate_passed"] == "True" and "data_counts" in v2.tags
    assert reg.previous_champion().version == "1"
    assert out.counts["holdout"] > 0 and out.counts["replay"] > 0
    assert out.gate.n_ref == len(reference)
    assert out.continual.forgetting == pytest.approx(
        out.continual.old_before - out.continual.old_after
    )
    assert out.finetune.steps > 0

    reg.rollback(by="bob", reason="complaints")
    assert reg.champion().version == "1" and reg.previous_champion() is None

    # A gate that cannot pass: registered as challenger, champion unchanged.
    strict = _fast(settings, tiny_model, min_gain=1.0)
    refused = retrain(
        strict,
        _production(demo_rows, seed=4),
        window="day-3",
        approver="alice",
        reason="drift",
        progress=False,
        epochs=1,
    )
    assert not refused.promoted and refused.reasons
    assert reg.champion().version == "1"
    assert reg.challenger().version == refused.version == "3"
    assert reg.version("3").tags["gate_passed"] == "False"


def test_bad_input_or_crash_registers_nothing(
    settings: Settings, tiny_model, demo_rows, airline_rows, monkeypatch
) -> None:
    from transformers import TrainerCallback

    s = _fast(settings, tiny_model, min_gain=-1.0, max_forgetting=1.0, bias_tolerance=1.0)
    bootstrap(s, rows=airline_rows, progress=False, epochs=1)
    reg = Registry(s.registry)

    one_class = _production(demo_rows).assign(label="positive")
    with pytest.raises(TrainingDataError, match="one class"):
        retrain(s, one_class, window="w", approver="a", reason="r", progress=False)
    with pytest.raises(TrainingDataError, match="no labelled"):
        retrain(
            s, _production(demo_rows).iloc[:0], window="w", approver="a", reason="r", progress=False
        )

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("power cut")

    with pytest.raises(TrainingFailed, match="power cut"):
        retrain(
            s,
            _production(demo_rows),
            window="w",
            approver="a",
            reason="r",
            progress=False,
            callbacks=[Boom()],
        )
    assert reg.champion().version == "1"
    assert [
        str(v.version) for v in reg.client.search_model_versions(f"name='{s.registry.model_name}'")
    ] == ["1"]

    # The alias move fails after registration: champion still the working version 1.
    real = reg.client.__class__.set_registered_model_alias

    def failing(self, name, alias, version):
        if alias == CHAMPION:
            raise ConnectionError("registry went away")
        return real(self, name, alias, version)

    monkeypatch.setattr(reg.client.__class__, "set_registered_model_alias", failing)
    with pytest.raises(PromotionError):
        retrain(
            s,
            _production(demo_rows),
            window="w",
            approver="a",
            reason="r",
            progress=False,
            epochs=1,
        )
    monkeypatch.undo()
    assert reg.champion().version == "1"
    assert reg.challenger().version == "2" and PREVIOUS_CHAMPION not in reg.version("1").aliases
    model, _, info = reg.load_champion(LABELS)
    assert info.version == "1" and model is not None
    assert CHALLENGER in reg.version("2").aliases
