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


def _mixed(demo_rows, n: int, seed: int) -> pd.DataFrame:
    """Labelled production rows of a shifted day: half airline, half other topics."""
    rng = random.Random(seed)
    airline = rng.sample([r for r in demo_rows if r["topic"] == "airline"][1200:], n // 2)
    other = rng.sample([r for r in demo_rows if r["topic"] not in ("airline", "other")], n // 2)
    rows = airline + other
    return pd.DataFrame(
        {
            "request_id": [f"mix-{seed}-{i}" for i in range(len(rows))],
            "timestamp": pd.Timestamp("2026-01-03", tz="UTC"),
            "text": [r["text"] for r in rows],
            "label": [r["label_name"] for r in rows],
            "segments": [
                {"topic": r["topic"], **({"airline": r["airline"]} if r.get("airline") else {})}
                for r in rows
            ],
        }
    )


def test_reference_moves_only_on_promotion_and_regression_set_never(
    settings: Settings, tiny_model, demo_rows, airline_rows, monkeypatch
) -> None:
    import retrain.pipeline as pipeline
    from retrain.bootstrap import load_regression, load_regression_predictions, load_replay

    trained: list[set[str]] = []
    real_finetune = pipeline.finetune

    def recording(model_dir, train, eval, **kwargs):
        trained.append(set(train["text"]) | set(eval["text"]))
        return real_finetune(model_dir, train, eval, **kwargs)

    monkeypatch.setattr(pipeline, "finetune", recording)
    s = _fast(settings, tiny_model, min_gain=-1.0, max_forgetting=1.0, bias_tolerance=1.0)
    bootstrap(s, rows=airline_rows, progress=False, epochs=1)
    reg = Registry(s.registry)
    ref1, regression1 = load_reference(reg), load_regression(reg)
    assert ref1["text"].tolist() == regression1["text"].tolist()
    assert "probabilities" not in regression1
    # The bias baseline: the regression set with the version's own probabilities.
    base1 = load_regression_predictions(reg)
    assert base1 is not None and base1["text"].tolist() == regression1["text"].tolist()
    assert base1["probabilities"].map(list).tolist() == ref1["probabilities"].map(list).tolist()

    day = _mixed(demo_rows, 200, seed=5)
    out = retrain(
        s,
        day,
        window="day-3",
        approver="alice",
        reason="drift",
        progress=False,
        epochs=1,
        min_reference_rows=20,
    )
    assert out.promoted and out.reference_rebased and out.reference_rows > 20
    ref2 = load_reference(reg)
    held = set(ref2["text"])
    assert len(ref2) == out.reference_rows and held <= set(day["text"])
    # The held-out rows were never trained on (nor used for early stopping / the gate).
    assert not held & trained[-1]
    assert not held & set(load_replay(reg)["text"])
    assert {"text", "label", "topic", "airline", "probabilities"} <= set(ref2.columns)
    assert "airline" in set(ref2["topic"]) and len(set(ref2["topic"])) > 1  # the new mix
    pd.testing.assert_frame_equal(load_regression(reg), regression1)
    assert "rebased" in reg.version(out.version).tags["reference"]
    base2 = load_regression_predictions(reg)
    assert base2 is not None and base2["text"].tolist() == regression1["text"].tolist()
    assert base2["probabilities"].map(list).tolist() != base1["probabilities"].map(list).tolist()

    # A refused challenger logs its own rebased reference, but the champion's does not move.
    strict = _fast(settings, tiny_model, min_gain=1.0)
    refused = retrain(
        strict,
        _mixed(demo_rows, 200, seed=6),
        window="day-4",
        approver="alice",
        reason="drift",
        progress=False,
        epochs=1,
        min_reference_rows=20,
    )
    assert not refused.promoted and refused.reference_rebased
    pd.testing.assert_frame_equal(load_reference(reg), ref2)
    assert set(load_reference(reg, refused.version)["text"]) != held
    pd.testing.assert_frame_equal(load_regression(reg, refused.version), regression1)

    # Too few held-out rows: the champion's reference is carried (re-predicted), all trained on.
    few = retrain(
        s,
        _mixed(demo_rows, 120, seed=7),
        window="day-5",
        approver="alice",
        reason="drift",
        progress=False,
        epochs=1,
    )
    assert few.promoted and not few.reference_rebased
    assert load_reference(reg)["text"].tolist() == ref2["text"].tolist()
    assert "carried from version 2" in reg.version(few.version).tags["reference"]
    assert len(trained[-1] & set(_mixed(demo_rows, 120, seed=7)["text"])) > 100
    pd.testing.assert_frame_equal(load_regression(reg), regression1)


def test_regression_set_falls_back_to_reference_of_old_versions(
    settings: Settings, tiny_model
) -> None:
    import tempfile
    from pathlib import Path

    from retrain.bootstrap import load_regression

    reg = Registry(settings.registry)
    old = pd.DataFrame(
        {
            "text": ["a", "b"],
            "label": [0, 2],
            "topic": "airline",
            "airline": "united",
            "probabilities": [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]],
        }
    )
    with reg.run("bootstrap") as run, tempfile.TemporaryDirectory() as tmp:
        old.to_parquet(Path(tmp) / "reference.parquet", index=False)
        run.log_artifacts(tmp, "reference")  # the layout before regression.parquet existed
        version = reg.register(run, tiny_model.path)
    regression = load_regression(reg, version.version)
    pd.testing.assert_frame_equal(regression, old.drop(columns=["probabilities"]))


def test_split_reference_holdout_keeps_texts_whole_and_caps() -> None:
    from retrain.pipeline import split_reference_holdout

    texts = [f"tweet {i % 150}" for i in range(300)]  # every text twice
    rows = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(300)],
            "text": texts,
            "label": ["negative", "positive"] * 150,
        }
    )
    held, train = split_reference_holdout(rows, fraction=0.3, seed=1)
    assert not set(held["text"]) & set(train["text"])
    assert 0.2 < len(held) / len(rows) < 0.4 and len(held) + len(train) == 300
    again, _ = split_reference_holdout(rows.sample(frac=1.0, random_state=0), fraction=0.3, seed=1)
    assert set(again["request_id"]) == set(held["request_id"])  # order-independent
    capped, rest = split_reference_holdout(rows, fraction=0.3, seed=1, max_rows=20)
    assert 20 <= len(capped) <= 22 and set(capped["text"]) < set(held["text"])
    assert not set(capped["text"]) & set(rest["text"]) and len(capped) + len(rest) == 300
    none, everything = split_reference_holdout(rows, fraction=0.0, seed=1)
    assert none.empty and len(everything) == 300
