"""Tests of monitor.decay: window metrics and the one-sided Welch t-test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from monitor.decay import decay_test, window_metrics
from monitor.errors import InputError, MonitorError


def test_window_metrics_counts_per_day() -> None:
    ts = pd.to_datetime(["2024-01-01 01:00", "2024-01-01 05:00", "2024-01-02 03:00"], utc=True)
    out = window_metrics(ts, [0, 1, 2], [0, 2, 2], freq="1D")
    assert [w.n for w in out] == [2, 1]
    assert out[0].accuracy == pytest.approx(0.5)
    assert out[1].accuracy == pytest.approx(1.0)
    assert out[0].correct == 1
    assert out[0].end - out[0].start == pd.Timedelta("1D")
    assert 0.0 <= out[0].macro_f1 <= 1.0


def test_window_metrics_skips_empty_and_small_windows() -> None:
    ts = ["2024-01-01", "2024-01-03", "2024-01-03"]
    out = window_metrics(ts, [0, 0, 1], [0, 0, 1], min_rows=2)
    assert len(out) == 1 and out[0].n == 2 and out[0].macro_f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("ts", "y", "p"),
    [
        ([], [], []),
        (["2024-01-01"], [0, 1], [0, 1]),
        (["2024-01-01", None], [0, 1], [0, 1]),
    ],
)
def test_window_metrics_bad_input(ts: list, y: list, p: list) -> None:
    with pytest.raises(InputError):
        window_metrics(ts, y, p)


def test_window_metrics_bad_freq() -> None:
    with pytest.raises(InputError):
        window_metrics(["2024-01-01"], [0], [0], freq="1Q!")


def test_decay_alerts_on_real_drop() -> None:
    rng = np.random.default_rng(0)
    ref = 0.85 + rng.normal(0, 0.01, 7)
    rec = 0.75 + rng.normal(0, 0.01, 4)
    res = decay_test(ref, rec, alpha=0.05, min_windows=3, min_drop=0.03)
    assert res.alert and not res.insufficient_data
    assert res.p_value is not None and res.p_value < 0.01
    assert res.drop == pytest.approx(ref.mean() - rec.mean())
    ev = res.evidence()
    assert ev["decision"] == "alert" and ev["n_recent_windows"] == 4
    assert isinstance(res, object) and res.threshold == 0.05


def test_decay_significant_but_small_drop_does_not_alert() -> None:
    rng = np.random.default_rng(1)
    ref = 0.85 + rng.normal(0, 0.001, 10)
    rec = 0.84 + rng.normal(0, 0.001, 10)
    res = decay_test(ref, rec, min_drop=0.03)
    assert res.p_value is not None and res.p_value < 0.05
    assert not res.alert and res.decision == "ok"


def test_decay_improvement_does_not_alert() -> None:
    res = decay_test([0.7, 0.72, 0.71], [0.9, 0.91, 0.92])
    assert not res.alert and res.p_value is not None and res.p_value > 0.5


def test_decay_insufficient_windows() -> None:
    res = decay_test([0.9, 0.9, 0.91], [0.5, 0.5], min_windows=3)
    assert res.insufficient_data and res.p_value is None and not res.alert
    assert res.evidence()["decision"] == "insufficient_data"
    assert "p_value" not in res.evidence()


def test_decay_zero_variance_both_sides() -> None:
    same = decay_test([0.8] * 4, [0.8] * 4)
    assert same.p_value == 1.0 and not same.alert and same.degenerate
    assert same.statistic == 0.0
    drop = decay_test([0.9] * 4, [0.8] * 4)
    assert drop.p_value == 0.0 and drop.alert and math.isinf(drop.statistic or 0.0)
    up = decay_test([0.8] * 4, [0.9] * 4)
    assert up.p_value == 1.0 and not up.alert
    for res in (same, drop, up):
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in res.evidence().values())


def test_decay_zero_variance_one_side_is_finite() -> None:
    res = decay_test([0.8] * 4, [0.7, 0.72, 0.69, 0.71])
    assert res.p_value is not None and math.isfinite(res.p_value) and res.alert


@pytest.mark.parametrize(
    ("ref", "rec"),
    [([0.9, float("nan"), 0.9], [0.8, 0.8, 0.8]), ([0.9, 0.9, 1.2], [0.8, 0.8, 0.8])],
)
def test_decay_bad_values(ref: list[float], rec: list[float]) -> None:
    with pytest.raises(MonitorError):
        decay_test(ref, rec)


def test_decay_bad_parameters() -> None:
    with pytest.raises(InputError):
        decay_test([0.9] * 3, [0.8] * 3, alpha=0)
    with pytest.raises(InputError):
        decay_test([0.9] * 3, [0.8] * 3, min_windows=1)


def test_decay_false_alarm_rate_under_null() -> None:
    rng = np.random.default_rng(42)
    alerts = sum(
        decay_test(rng.normal(0.85, 0.02, 5), rng.normal(0.85, 0.02, 4), min_drop=0.0).alert
        for _ in range(2000)
    )
    assert alerts / 2000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_decay_end_to_end_from_window_metrics() -> None:
    rng = np.random.default_rng(3)
    days = pd.date_range("2024-01-01", periods=10, freq="1D", tz="UTC")
    ts, y, p = [], [], []
    for i, day in enumerate(days):
        acc = 0.9 if i < 6 else 0.7
        yt = rng.integers(0, 3, 200)
        correct = rng.random(200) < acc
        yp = np.where(correct, yt, (yt + 1) % 3)
        ts += [day + pd.Timedelta(minutes=int(m)) for m in rng.integers(0, 1440, 200)]
        y += list(yt)
        p += list(yp)
    wins = window_metrics(ts, y, p, freq="1D")
    assert len(wins) == 10
    accs = [w.accuracy for w in wins]
    res = decay_test(accs[:6], accs[6:])
    assert res.alert and res.drop == pytest.approx(0.2, abs=0.05)
