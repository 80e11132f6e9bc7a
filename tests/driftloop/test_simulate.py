"""The traffic simulator, with the tiny model and a few rows per day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from driftloop.data import AIRLINE_TOPIC
from driftloop.settings import Settings, load_settings
from driftloop.simulate import (
    REFERENCE_FRACTION,
    SimulationSummary,
    reference_split,
    simulate_traffic,
)
from monitor.store import PredictionStore, open_store


@pytest.fixture
def sim_settings(settings: Settings) -> Settings:
    """The temp-home settings with a small, fast demo."""
    return load_settings(
        home=settings.home,
        store={"url": settings.store.url},
        demo={
            "days": 4,
            "rows_per_day": 40,
            "shift_start_day": 2,
            "shift_fraction": 0.5,
            "label_fraction": 0.5,
            "label_delay_days": 1.0,
            "seed": 3,
        },
        model={"device": "cpu", "batch_size": 32},
    )


@pytest.fixture
def store(sim_settings: Settings) -> PredictionStore:
    return open_store(sim_settings.store, create=True)


def test_reference_split_is_deterministic_and_disjoint(demo_rows: list[dict[str, Any]]) -> None:
    ref, pool = reference_split(demo_rows, 7)
    ref2, pool2 = reference_split(list(reversed(demo_rows)), 7)
    assert len(ref) + len(pool) == len(demo_rows)
    assert {r["text"] for r in ref} == {r["text"] for r in ref2}
    assert len(pool) == len(pool2)
    assert all(r["topic"] == AIRLINE_TOPIC for r in ref)
    assert not {r["text"] for r in ref} & {r["text"] for r in pool}
    airline = sum(r["topic"] == AIRLINE_TOPIC for r in demo_rows)
    assert abs(len(ref) / airline - REFERENCE_FRACTION) < 0.02
    other_seed, _ = reference_split(demo_rows, 8)
    assert {r["text"] for r in other_seed} != {r["text"] for r in ref}


def test_simulate_traffic(sim_settings: Settings, store: PredictionStore, tiny_model: Any) -> None:
    summary = simulate_traffic(
        sim_settings,
        store,
        model=tiny_model.model,
        tokenizer=tiny_model.tokenizer,
        model_version="7",
        progress=False,
    )
    assert isinstance(summary, SimulationSummary)
    assert [d.rows for d in summary.days] == [40] * 4
    assert [d.shifted_share for d in summary.days] == [0.0, 0.0, 0.5, 0.5]
    assert summary.as_table().row_count == 4
    counts = store.counts()
    assert counts["predictions"] == 160 and counts["quarantine"] == 0
    assert counts["labels"] == summary.labels > 0

    bounds = store.time_bounds()
    assert bounds is not None
    now = datetime.now(UTC)
    assert bounds[1] < now and bounds[0] >= now - timedelta(days=5)
    frame = store.window(bounds[0], bounds[1] + timedelta(seconds=1))
    assert len(frame) == 160 and set(frame["model_version"]) == {"7"}
    for segments in frame["segments"]:
        assert ("airline" in segments) == (segments["topic"] == AIRLINE_TOPIC)
    early = frame[frame["timestamp"] < bounds[0] + timedelta(days=1)]
    assert all(s["topic"] == AIRLINE_TOPIC for s in early["segments"])

    labelled = store.labelled(bounds[0], bounds[1] + timedelta(seconds=1))
    delay = labelled["label_timestamp"] - labelled["timestamp"]
    assert (delay == timedelta(days=1)).all()
    assert (labelled["label_timestamp"] <= now).all()

    # The reference rows are never replayed as production traffic.
    from driftloop.data import read_demo_rows

    ref, _ = reference_split(read_demo_rows(), sim_settings.demo.seed)
    assert not set(frame["text"]) & {r["text"] for r in ref}

    # Same seed: same request ids and rows, so a re-run stores nothing new.
    again = simulate_traffic(
        sim_settings,
        store,
        model=tiny_model.model,
        tokenizer=tiny_model.tokenizer,
        model_version="7",
        progress=False,
    )
    assert sum(d.stored for d in again.days) == 0
    assert sum(d.duplicate for d in again.days) == 160
    assert store.counts()["predictions"] == 160


def test_simulate_from_model_dir_and_fixed_start(
    sim_settings: Settings, store: PredictionStore, tiny_model: Any
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    summary = simulate_traffic(
        sim_settings, store, model_dir=tiny_model.path, days=2, start=start, progress=False
    )
    assert summary.model_version == tiny_model.path.name
    assert [d.date for d in summary.days] == ["2024-01-01", "2024-01-02"]
    assert store.time_bounds()[0] >= start  # type: ignore[index]
    assert summary.labels == store.counts()["labels"] > 0


def test_simulate_rejects_half_a_model(sim_settings: Settings, store: PredictionStore) -> None:
    with pytest.raises(ValueError, match="model and tokenizer"):
        simulate_traffic(sim_settings, store, model=object(), progress=False)


def test_day_by_day_equals_one_run(sim_settings: Settings, tmp_path: Any, tiny_model: Any) -> None:
    """Days simulated one at a time give the rows, ids and timestamps of a single run."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    whole = open_store(
        sim_settings.store.model_copy(update={"url": f"sqlite:///{tmp_path}/whole.db"}),
        create=True,
    )
    parts = open_store(
        sim_settings.store.model_copy(update={"url": f"sqlite:///{tmp_path}/parts.db"}),
        create=True,
    )
    kwargs: dict[str, Any] = {
        "model": tiny_model.model,
        "tokenizer": tiny_model.tokenizer,
        "model_version": "1",
        "start": start,
        "progress": False,
    }
    simulate_traffic(sim_settings, whole, **kwargs)
    one = simulate_traffic(sim_settings, parts, first_day=0, days=1, **kwargs)
    rest = simulate_traffic(sim_settings, parts, first_day=1, **kwargs)
    assert [d.day for d in one.days] == [0] and [d.day for d in rest.days] == [1, 2, 3]
    assert [d.date for d in rest.days] == ["2024-03-02", "2024-03-03", "2024-03-04"]
    assert [d.shifted_share for d in rest.days] == [0.0, 0.5, 0.5]
    end = start + timedelta(days=4)
    a, b = whole.window(start, end), parts.window(start, end)
    cols = ["request_id", "timestamp", "text", "label", "label_timestamp"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert b["request_id"].str.fullmatch(r"sim-3-00[0-3]-\d{5}").all()
    # Day 2 alone, with the default start: dated like the whole run's day 2.
    alone = simulate_traffic(
        sim_settings,
        parts,
        model=tiny_model.model,
        tokenizer=tiny_model.tokenizer,
        first_day=2,
        days=1,
        progress=False,
    )
    full = simulate_traffic(
        sim_settings, parts, model=tiny_model.model, tokenizer=tiny_model.tokenizer, progress=False
    )
    assert alone.start == full.start and alone.days[0].date == full.days[2].date
    with pytest.raises(ValueError, match="first_day"):
        simulate_traffic(sim_settings, parts, first_day=-1, progress=False)
