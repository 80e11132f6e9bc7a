"""The prediction log, on SQLite (temp dir) and on the real PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import create_engine, text

from driftloop.settings import StoreSettings
from monitor.errors import StoreError
from monitor.store import (
    IngestResult,
    PredictionStore,
    allocate_proportional,
    open_store,
    raw_text,
    sample_key,
)
from tests.conftest import POSTGRES_URL

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=10)


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        return f"no PostgreSQL answers at {POSTGRES_URL}: {type(exc).__name__}"
    return None


_PG_SKIP = _postgres_available()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a temp SQLite file, or a unique PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/log/driftloop.db"
        return
    if _PG_SKIP:
        pytest.skip(_PG_SKIP)
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _open(url: str, **kwargs: Any) -> PredictionStore:
    return open_store(StoreSettings(url=url, **kwargs), create=True)


@pytest.fixture
def store(store_url: str) -> Iterator[PredictionStore]:
    """An empty, created store."""
    s = _open(store_url)
    yield s
    s.engine.dispose()


def pred(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid prediction row."""
    row: dict[str, Any] = {
        "request_id": f"req-{i}",
        "timestamp": T0 + timedelta(minutes=i),
        "model_name": "clf",
        "model_version": "1",
        "text": f"tweet number {i}",
        "predicted_label": "positive",
        "probabilities": [0.1, 0.2, 0.7],
        "segments": {"airline": "united" if i % 4 else "delta"},
        "latency_ms": 4.5,
    }
    row.update(overrides)
    return row


def _check(result: IngestResult) -> None:
    assert result.offered == result.stored + result.duplicate + result.quarantined
    assert sum(result.reasons.values()) == result.quarantined


# --- bad rows -------------------------------------------------------------------------------

BAD_PREDICTIONS: list[tuple[dict[str, Any], str]] = [
    ({"text": ""}, "empty text"),
    ({"text": "   "}, "empty text"),
    ({"text": "x" * 10_001}, "text longer than 10000 characters"),
    ({"text": b"caf\xe9 au lait"}, "invalid UTF-8"),
    ({"text": "caf\udce9"}, "invalid UTF-8"),
    ({"text": "nul\x00byte"}, "text contains a NUL character"),
    ({"probabilities": [0.5, float("nan"), 0.5]}, "probabilities contain NaN"),
    ({"probabilities": [1.2, -0.2, 0.0]}, "negative probability"),
    (
        {"probabilities": [0.2, 0.03, 0.7]},
        "probabilities sum to 0.93, not 1 (tolerance 0.001)",
    ),
    ({"probabilities": [0.5, 0.5]}, "expected 3 probabilities, got 2"),
    ({"probabilities": "[0.5, oops"}, "probabilities is not valid JSON"),
    ({"probabilities": ["a", "b", "c"]}, "probabilities contain a non-number"),
    (
        {"predicted_label": "meh"},
        "unknown label 'meh' (known: negative, neutral, positive)",
    ),
    ({"timestamp": "yesterday-ish"}, "unparseable timestamp"),
    ({"timestamp": NOW + timedelta(days=1)}, "timestamp in the future"),
    ({"request_id": None}, "missing field request_id"),
    ({"model_version": ""}, "empty model_version"),
    ({"segments": ["united"]}, "segments must be a JSON object"),
    ({"latency_ms": -3}, "latency_ms must be a finite number >= 0"),
]


@pytest.mark.parametrize(
    ("override", "reason"), BAD_PREDICTIONS, ids=[r for _, r in BAD_PREDICTIONS]
)
def test_bad_prediction_goes_to_quarantine_with_reason(
    store: PredictionStore, override: dict[str, Any], reason: str
) -> None:
    result = store.log_predictions([pred(1), pred(2, **override)])
    _check(result)
    assert (result.stored, result.duplicate, result.quarantined) == (1, 0, 1)
    assert result.reasons == {reason: 1}
    q = store.quarantined()
    assert list(q["reason"]) == [reason]
    assert list(q["kind"]) == ["predictions"]
    assert store.counts() == {"predictions": 1, "labels": 0, "quarantine": 1}


def test_missing_field_names_the_field(store: PredictionStore) -> None:
    row = pred(1)
    del row["text"]
    result = store.log_predictions([row])
    assert result.reasons == {"missing field text": 1}


def test_quarantine_keeps_raw_row(store: PredictionStore) -> None:
    store.log_predictions([pred(7, predicted_label="meh")])
    raw = json.loads(store.quarantined()["raw"][0])
    assert raw["request_id"] == "req-7" and raw["predicted_label"] == "meh"


def test_raw_text_fallbacks() -> None:
    assert raw_text(b"a\xffb") == "a\\xffb"
    assert raw_text({"a": object()}).startswith("{'a': <object")
    assert json.loads(raw_text({"t": "nul\x00"})) == {"t": "nul\x00"}


def test_counts_add_up_on_a_mixed_batch(store: PredictionStore) -> None:
    rows = [pred(i) for i in range(50)]
    rows += [pred(100 + i, **override) for i, (override, _) in enumerate(BAD_PREDICTIONS)]
    rows += [pred(3), pred(4)]  # identical repeats within the call
    result = store.log_predictions(rows)
    _check(result)
    assert result.offered == len(rows)
    assert (result.stored, result.duplicate) == (50, 2)
    assert result.quarantined == len(BAD_PREDICTIONS)
    assert store.counts() == {
        "predictions": 50,
        "labels": 0,
        "quarantine": len(BAD_PREDICTIONS),
    }


def test_duplicates_are_idempotent(store: PredictionStore) -> None:
    rows = [pred(i) for i in range(20)]
    first = store.log_predictions(rows)
    again = store.log_predictions(rows)
    assert (first.stored, first.duplicate) == (20, 0)
    assert (again.stored, again.duplicate, again.quarantined) == (0, 20, 0)
    assert store.counts()["predictions"] == 20


def test_conflicting_repeat_within_batch_is_quarantined(store: PredictionStore) -> None:
    result = store.log_predictions([pred(1), pred(1, text="something else")])
    assert (result.stored, result.duplicate, result.quarantined) == (1, 0, 1)
    assert result.reasons == {"request_id repeated with different content": 1}


def test_timestamps_naive_means_utc_and_iso_strings(store: PredictionStore) -> None:
    naive = (T0 + timedelta(hours=1)).replace(tzinfo=None)
    iso_z = (T0 + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    other_tz = (T0 + timedelta(hours=3)).astimezone(
        __import__("datetime").timezone(timedelta(hours=-5))
    )
    store.log_predictions(
        [pred(1, timestamp=naive), pred(2, timestamp=iso_z), pred(3, timestamp=other_tz)]
    )
    frame = store.window(T0, NOW)
    assert str(frame["timestamp"].dt.tz) == "UTC"
    got = [ts.to_pydatetime() for ts in frame["timestamp"]]
    assert got == [T0 + timedelta(hours=h) for h in (1, 2, 3)]
    bounds = store.time_bounds()
    assert bounds is not None and bounds[0].tzinfo is not None
    assert bounds == (T0 + timedelta(hours=1), T0 + timedelta(hours=3))


# --- labels ---------------------------------------------------------------------------------


def test_labels_join_and_validation(store: PredictionStore) -> None:
    store.log_predictions([pred(i) for i in range(5)])
    result = store.log_labels(
        [
            {"request_id": "req-0", "label": "negative", "source": "annotator"},
            {"request_id": "req-1", "label": "positive", "timestamp": T0 + timedelta(days=1)},
            {"request_id": "nope", "label": "negative"},
            {"request_id": "req-2", "label": "meh"},
            {"request_id": "req-3"},
            {"request_id": "req-0", "label": "negative", "source": "annotator"},
        ]
    )
    _check(result)
    assert (result.stored, result.duplicate, result.quarantined) == (2, 1, 3)
    assert result.reasons == {
        "label for unknown request_id": 1,
        "unknown label 'meh' (known: negative, neutral, positive)": 1,
        "missing field label": 1,
    }
    again = store.log_labels([{"request_id": "req-0", "label": "negative"}])
    assert again.duplicate == 1
    conflict = store.log_labels([{"request_id": "req-0", "label": "positive"}])
    assert conflict.reasons == {"request_id already labelled 'negative'": 1}
    frame = store.window(T0, NOW)
    assert list(frame["label"]) == ["negative", "positive", None, None, None]
    assert frame["label_timestamp"].iloc[1] == pd.Timestamp(T0 + timedelta(days=1))
    assert pd.isna(frame["label_timestamp"].iloc[2])
    labelled = store.labelled(T0, NOW)
    assert list(labelled["request_id"]) == ["req-0", "req-1"]
    assert store.counts() == {"predictions": 5, "labels": 2, "quarantine": 4}


def test_labelled_as_of_ignores_labels_that_arrived_later(store: PredictionStore) -> None:
    store.log_predictions([pred(i) for i in range(6)])
    # req-i is labelled i hours after T0 (req-5 stays unlabelled).
    store.log_labels(
        [
            {"request_id": f"req-{i}", "label": "negative", "timestamp": T0 + timedelta(hours=i)}
            for i in range(5)
        ]
    )
    everything = store.labelled(T0, NOW)
    assert list(everything["request_id"]) == [f"req-{i}" for i in range(5)]
    cut = T0 + timedelta(hours=2)
    as_of = store.labelled(T0, NOW, as_of=cut)
    assert list(as_of["request_id"]) == ["req-0", "req-1", "req-2"]  # <= as_of: inclusive
    assert (as_of["label_timestamp"] <= pd.Timestamp(cut)).all()
    # Naive and ISO-string bounds mean UTC, like the window bounds.
    naive = store.labelled(T0, NOW, as_of=cut.replace(tzinfo=None) - timedelta(seconds=1))
    assert list(naive["request_id"]) == ["req-0", "req-1"]
    assert len(store.labelled(T0, NOW, as_of=cut.isoformat())) == 3
    assert store.labelled(T0, NOW, as_of=T0 - timedelta(seconds=1)).empty
    # Combines with the prediction window and the version filter.
    assert list(store.labelled(T0, T0 + timedelta(minutes=2), as_of=cut)["request_id"]) == [
        "req-0",
        "req-1",
    ]
    assert store.labelled(T0, NOW, model_version="2", as_of=cut).empty


# --- atomicity ------------------------------------------------------------------------------


def test_failed_batch_writes_nothing(
    store: PredictionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert = PredictionStore._insert

    def crash_after_half(self: PredictionStore, conn: Any, table: Any, rows: list[Any]) -> None:
        if table.name == "predictions":
            real_insert(self, conn, table, rows[: len(rows) // 2])
            raise RuntimeError("disk on fire")
        real_insert(self, conn, table, rows)

    monkeypatch.setattr(PredictionStore, "_insert", crash_after_half)
    rows = [pred(i) for i in range(10)] + [pred(99, text="")]
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.log_predictions(rows)
    assert store.counts() == {"predictions": 0, "labels": 0, "quarantine": 0}


def test_quarantine_crash_rolls_back_the_predictions_too(
    store: PredictionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert = PredictionStore._insert

    def crash_on_quarantine(self: PredictionStore, conn: Any, table: Any, rows: list[Any]) -> None:
        if table.name == "quarantine":
            raise RuntimeError("quarantine write failed")
        real_insert(self, conn, table, rows)

    monkeypatch.setattr(PredictionStore, "_insert", crash_on_quarantine)
    with pytest.raises(RuntimeError):
        store.log_predictions([pred(1), pred(2, text="")])
    assert store.counts() == {"predictions": 0, "labels": 0, "quarantine": 0}


def test_each_batch_is_its_own_transaction(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _open(store_url, batch_size=4)
    real_insert = PredictionStore._insert
    calls = {"n": 0}

    def crash_on_second_batch(
        self: PredictionStore, conn: Any, table: Any, rows: list[Any]
    ) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            real_insert(self, conn, table, rows[:1])
            raise RuntimeError("crash in batch 2")
        real_insert(self, conn, table, rows)

    monkeypatch.setattr(PredictionStore, "_insert", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        store.log_predictions([pred(i) for i in range(12)])
    monkeypatch.undo()
    frame = store.window(T0, NOW)
    assert list(frame["request_id"]) == [f"req-{i}" for i in range(4)]
    # Re-running after the crash completes the log without duplicating the first batch.
    result = store.log_predictions([pred(i) for i in range(12)])
    assert (result.stored, result.duplicate) == (8, 4)
    store.engine.dispose()


# --- files ----------------------------------------------------------------------------------


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["timestamp"] = row["timestamp"].isoformat()
    return out


def test_ingest_jsonl_with_garbage_lines(store: PredictionStore, tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    lines = [json.dumps(_jsonable(pred(i))).encode() for i in range(6)]
    lines.insert(2, b'{"request_id": "broken", ')
    lines.insert(4, b'{"request_id": "bytes", "text": "caf\xe9"}')
    lines.insert(5, b"[1, 2, 3]")
    lines.append(b"")
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = store.ingest_file(path)
    _check(result)
    assert (result.offered, result.stored, result.quarantined) == (9, 6, 3)
    assert result.reasons["invalid UTF-8"] == 1
    assert result.reasons["JSON line is not an object"] == 1
    assert any(r.startswith("invalid JSON on line 3") for r in result.reasons)
    raws = set(store.quarantined()["raw"])
    assert '{"request_id": "bytes", "text": "caf\\xe9"}' in raws
    again = store.ingest_file(path)
    assert (again.stored, again.duplicate) == (0, 6)
    assert store.counts()["predictions"] == 6


def test_ingest_csv(store: PredictionStore, tmp_path: Path) -> None:
    path = tmp_path / "preds.csv"
    fields = list(pred(0))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for i in range(5):
            row = pred(
                i, segments={"airline": "delta"} if i else None, latency_ms=None if i == 2 else 1.5
            )
            row["probabilities"] = json.dumps(row["probabilities"])
            row["segments"] = json.dumps(row["segments"]) if row["segments"] else ""
            row["timestamp"] = row["timestamp"].isoformat()
            writer.writerow(row)
    with path.open("ab") as fh:
        fh.write(b'bad,2020-01-01T00:00:00,clf,1,caf\xe9,positive,"[0.1,0.2,0.7]",,\n')
    result = store.ingest_file(path)
    _check(result)
    assert (result.stored, result.quarantined) == (5, 1)
    assert result.reasons == {"invalid UTF-8": 1}
    frame = store.window(T0, NOW)
    assert frame["probabilities"].iloc[0] == [0.1, 0.2, 0.7]
    assert frame["segments"].iloc[0] == {} and frame["segments"].iloc[1] == {"airline": "delta"}
    assert math.isnan(frame["latency_ms"].iloc[2])
    assert json.loads(store.quarantined()["raw"][0])["text"] == "caf\\xe9"


def test_ingest_parquet_and_labels_file(store: PredictionStore, tmp_path: Path) -> None:
    rows = [pred(i) for i in range(8)]
    frame = pd.DataFrame(rows)
    frame.to_parquet(tmp_path / "preds.parquet")
    result = store.ingest_file(tmp_path / "preds.parquet")
    assert (result.stored, result.quarantined) == (8, 0)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "\n".join(json.dumps({"request_id": f"req-{i}", "label": "neutral"}) for i in range(10))
    )
    result = store.ingest_file(labels, kind="labels")
    assert (result.stored, result.quarantined) == (8, 2)
    assert store.counts() == {"predictions": 8, "labels": 8, "quarantine": 2}


def test_unsupported_file_type_and_kind(store: PredictionStore, tmp_path: Path) -> None:
    path = tmp_path / "preds.txt"
    path.write_text("hello")
    with pytest.raises(StoreError, match=r"unsupported file type '\.txt'"):
        store.ingest_file(path)
    with pytest.raises(StoreError, match="unknown kind"):
        store.ingest_file(tmp_path / "x.jsonl", kind="embeddings")
    with pytest.raises(StoreError, match="file not found"):
        store.ingest_file(tmp_path / "missing.jsonl")


# --- reading --------------------------------------------------------------------------------


def test_window_is_half_open_and_filters_version(store: PredictionStore) -> None:
    rows = [pred(i, model_version="1" if i < 30 else "2") for i in range(60)]
    store.log_predictions(rows)
    start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=40)
    frame = store.window(start, end)
    assert list(frame.columns) == [
        "request_id",
        "timestamp",
        "model_name",
        "model_version",
        "text",
        "predicted_label",
        "probabilities",
        "segments",
        "latency_ms",
        "label",
        "label_timestamp",
    ]
    assert list(frame["request_id"]) == [f"req-{i}" for i in range(10, 40)]
    assert store.count(start, end) == 30
    assert store.count(start, end, model_version="2") == 10
    assert len(store.window(start, end, model_version="1")) == 20
    assert store.window(NOW, NOW + timedelta(days=1)).empty


def test_sample_basic(store: PredictionStore) -> None:
    store.log_predictions([pred(i) for i in range(100)])
    sample = store.sample(T0, NOW, 20, seed=3)
    assert len(sample) == 20 and sample["request_id"].is_unique
    assert list(sample.columns) == list(store.window(T0, NOW).columns)
    assert sample["request_id"].tolist() == store.sample(T0, NOW, 20, seed=3)["request_id"].tolist()
    assert set(sample["request_id"]) != set(store.sample(T0, NOW, 20, seed=4)["request_id"])
    assert len(store.sample(T0, NOW, 500)) == 100
    assert store.sample(T0, NOW, 0).empty
    inside = store.sample(T0 + timedelta(minutes=50), T0 + timedelta(minutes=60), 5)
    assert set(inside["request_id"]) <= {f"req-{i}" for i in range(50, 60)}
    assert store.sample(NOW, NOW + timedelta(days=1), 5).empty


def test_sample_is_uniform_over_seeds(store: PredictionStore) -> None:
    rows, n, seeds = 150, 15, 400
    store.log_predictions([pred(i) for i in range(rows)])
    hits = dict.fromkeys((f"req-{i}" for i in range(rows)), 0)
    for seed in range(seeds):
        for rid in store.sample(T0, NOW, n, seed=seed)["request_id"]:
            hits[rid] += 1
    observed = np.array(list(hits.values()))
    assert observed.sum() == n * seeds
    # Sampling without replacement makes the counts slightly under-dispersed: a plain
    # chi-square test is conservative here, so a failure means real non-uniformity.
    result = stats.chisquare(observed)
    assert result.pvalue > 0.001, (result, observed.min(), observed.max())


def test_sample_keys_are_uniform_and_fixed_by_the_request_id() -> None:
    keys = np.array([sample_key(f"req-{i}") for i in range(20_000)])
    assert ((keys >= 0) & (keys < 1)).all()
    assert stats.kstest(keys, "uniform").pvalue > 0.001
    assert sample_key("req-7") == sample_key("req-7") != sample_key("req-8")


def test_the_same_window_gives_the_same_sample_in_every_store(
    store: PredictionStore, tmp_path: Path
) -> None:
    # A re-run of the monitor on the same window must see the same rows, whatever the store,
    # the order or the batches the rows came in.
    rows = [pred(i) for i in range(300)]
    store.log_predictions(rows)
    other = _open(f"sqlite:///{tmp_path}/other.db", batch_size=7)
    other.log_predictions(rows[::-1])
    for seed in (0, 5):
        ours = store.sample(T0, NOW, 40, seed=seed)["request_id"].tolist()
        assert ours == other.sample(T0, NOW, 40, seed=seed)["request_id"].tolist()
    other.engine.dispose()


def test_sample_stratified_proportions(store: PredictionStore) -> None:
    airlines = ["united"] * 120 + ["delta"] * 60 + ["jetblue"] * 20
    rows = [pred(i, segments={"airline": a}) for i, a in enumerate(airlines)]
    rows += [pred(500 + i, segments=None) for i in range(20)]  # no airline: its own stratum
    store.log_predictions(rows)
    sample = store.sample(T0, NOW, 22, stratify_by="airline", seed=1)
    got = pd.Series([s.get("airline") for s in sample["segments"]]).value_counts(dropna=False)
    assert got.to_dict() == {"united": 12, "delta": 6, "jetblue": 2, None: 2}
    assert sample["request_id"].is_unique


def test_allocate_proportional() -> None:
    assert allocate_proportional({"a": 1, "b": 2}, 10) == {"a": 1, "b": 2}
    quota = allocate_proportional({"a": 50, "b": 30, "c": 20}, 7)
    assert sum(quota.values()) == 7 and quota == {"a": 4, "b": 2, "c": 1}


def test_counts_and_time_bounds_empty(store: PredictionStore) -> None:
    assert store.time_bounds() is None
    assert store.counts() == {"predictions": 0, "labels": 0, "quarantine": 0}


# --- opening --------------------------------------------------------------------------------


def test_sqlite_wal_and_no_dir_without_create(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/dir/driftloop.db"
    with pytest.raises(StoreError, match="no prediction log"):
        open_store(StoreSettings(url=url))
    assert not (tmp_path / "sub").exists()
    store = open_store(StoreSettings(url=url), create=True)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.engine.dispose()
    reopened = open_store(StoreSettings(url=url))
    assert reopened.counts()["predictions"] == 0


def test_unreachable_postgres_raises_store_error() -> None:
    url = "postgresql+psycopg://driftloop:s3cret@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(StoreError, match="cannot reach the prediction log") as info:
        open_store(StoreSettings(url=url))
    assert "s3cret" not in str(info.value)


def test_safe_url_masks_password(store: PredictionStore) -> None:
    from sqlalchemy.engine import make_url

    url = make_url("postgresql+psycopg://u:hunter2@db/x")
    assert "hunter2" not in url.render_as_string(hide_password=True)
    assert "***" not in store.safe_url or "@" in store.safe_url


def test_postgres_password_masked_in_safe_url() -> None:
    if _PG_SKIP:
        pytest.skip(_PG_SKIP)
    # trust auth ignores the password; a schema that does not exist: no tables, an error
    url = POSTGRES_URL.replace("postgres@", "postgres:hunter2@")
    url += f"?options=-csearch_path%3Dmissing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match="has no tables") as info:
        open_store(StoreSettings(url=url))
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_ingest_prints_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    db = tmp_path / "home" / "driftloop.db"
    config = tmp_path / "driftloop.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n[store]\nurl = "sqlite:///{db}"\n')
    path = tmp_path / "preds.jsonl"
    rows = [_jsonable(pred(i)) for i in range(4)] + [_jsonable(pred(9, text=""))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--config", str(config), "ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert "offered" in result.output and "quarantined" in result.output
    assert "1 x empty text" in result.output
    numbers = [line for line in result.output.splitlines() if "│" in line and "6" in line]
    assert numbers and all(n in numbers[0] for n in ("6", "4", "0", "2"))
    again = CliRunner().invoke(app, ["--config", str(config), "ingest", str(path)])
    assert again.exit_code == 0
    store = open_store(StoreSettings(url=f"sqlite:///{db}"))
    assert store.counts()["predictions"] == 4
    bad = tmp_path / "preds.txt"
    bad.write_text("x")
    failed = CliRunner().invoke(app, ["--config", str(config), "ingest", str(bad)])
    assert failed.exit_code == 1
    assert "unsupported file type" in failed.output
