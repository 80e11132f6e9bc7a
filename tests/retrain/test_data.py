"""Training-set assembly: dedup, replay, new-only holdout, and each refusal."""

from __future__ import annotations

import pandas as pd
import pytest

from driftloop.settings import LABELS, RetrainSettings
from retrain.data import assemble_training_set
from retrain.errors import TrainingDataError

SETTINGS = RetrainSettings(min_rows=20, replay_ratio=1.0, holdout_fraction=0.25, seed=1)


def _labelled(n: int = 60, labels: tuple[str, ...] = LABELS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "timestamp": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
            "text": [f"new text number {i}" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
            "segments": [{"topic": "apple"} for _ in range(n)],
        }
    )


def _reference(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"old airline text {i}" for i in range(n)],
            "label": [i % 3 for i in range(n)],
            "topic": "airline",
            "airline": "united",
        }
    )


def test_assembles_dedups_replays_and_holds_out_new_rows_only() -> None:
    frame = _labelled()
    dupes = frame.iloc[:5].copy()  # same request ids again
    same_text = frame.iloc[5:8].copy().assign(request_id=["x1", "x2", "x3"])
    ts = assemble_training_set(
        pd.concat([frame, dupes, same_text]), _reference(), settings=SETTINGS, labels=LABELS
    )
    c = ts.counts
    assert c["labelled_rows"] == 68 and c["duplicates_dropped"] == 8 and c["new_rows"] == 60
    assert c["holdout"] == 15 and c["new_train"] == 45
    assert c["replay"] == 45 and c["train"] == 90
    assert set(ts.holdout["source"]) == {"new"}
    assert not set(ts.holdout["text"]) & set(ts.train["text"])
    assert sorted(set(ts.holdout["label"])) == [0, 1, 2]
    assert set(ts.train.filter(lambda r: r["source"] == "new")["topic"]) == {"apple"}


def test_accepts_a_datasets_reference_and_integer_labels() -> None:
    import datasets

    frame = _labelled().assign(label=[i % 3 for i in range(60)])
    ts = assemble_training_set(
        frame, datasets.Dataset.from_pandas(_reference()), settings=SETTINGS, labels=LABELS
    )
    assert ts.counts["replay"] == ts.counts["new_train"]


def test_refuses_no_labelled_rows() -> None:
    empty = _labelled().iloc[:0]
    with pytest.raises(TrainingDataError, match="no labelled"):
        assemble_training_set(empty, _reference(), settings=SETTINGS, labels=LABELS)
    unlabelled = _labelled().assign(label=None)
    with pytest.raises(TrainingDataError, match="no labelled"):
        assemble_training_set(unlabelled, _reference(), settings=SETTINGS, labels=LABELS)


def test_refuses_a_single_class() -> None:
    with pytest.raises(TrainingDataError, match="one class"):
        assemble_training_set(
            _labelled(labels=("positive",)), _reference(), settings=SETTINGS, labels=LABELS
        )


def test_refuses_labels_outside_the_label_set() -> None:
    with pytest.raises(TrainingDataError, match="outside the model's label set"):
        assemble_training_set(
            _labelled(labels=("positive", "sarcastic")),
            _reference(),
            settings=SETTINGS,
            labels=LABELS,
        )
    with pytest.raises(TrainingDataError, match="outside"):
        assemble_training_set(
            _labelled().assign(label=[i % 4 for i in range(60)]),
            _reference(),
            settings=SETTINGS,
            labels=LABELS,
        )


def test_refuses_fewer_than_min_rows() -> None:
    with pytest.raises(TrainingDataError, match="min_rows"):
        assemble_training_set(_labelled(10), _reference(), settings=SETTINGS, labels=LABELS)
