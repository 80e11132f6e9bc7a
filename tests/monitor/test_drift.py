"""KS drift: statistics vs scipy, corrections, decisions both ways, bad inputs, alibi conformance."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import stats

from monitor.drift import (
    benjamini_hochberg,
    bonferroni,
    embedding_drift,
    fit_projection,
    ks_critical_distance,
    ks_drift,
    ks_p_values,
    ks_statistics,
    probability_drift,
)
from monitor.errors import InputError, MonitorError

HAS_ALIBI = importlib.util.find_spec("alibi_detect") is not None


def _pair(seed: int, n: int = 300, m: int = 200, d: int = 8, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n, d))
    cur = rng.normal(size=(m, d))
    cur[:, 0] += shift
    return ref, cur


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_and_p_values_match_scipy(seed: int) -> None:
    ref, cur = _pair(seed, shift=0.3)
    ref[:50, 1] = 0.0  # ties across and within samples
    cur[:20, 1] = 0.0
    ref = np.round(ref, 1)
    cur = np.round(cur, 1)
    expected = stats.ks_2samp(ref, cur, axis=0, method="asymp")
    d = ks_statistics(ref, cur)
    np.testing.assert_allclose(d, expected.statistic, atol=1e-12)
    np.testing.assert_allclose(ks_p_values(d, len(ref), len(cur)), expected.pvalue, rtol=1e-9)


def test_corrections() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(bonferroni(p), [0.04, 0.16, 0.12, 0.8])
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert benjamini_hochberg(p).min() <= bonferroni(p).min()


@pytest.mark.parametrize("correction", ["bonferroni", "fdr_bh"])
def test_no_shift_no_alert_and_shift_alerts(correction: str) -> None:
    same = ks_drift(*_pair(1), correction=correction)  # type: ignore[arg-type]
    assert same.verdict == "no_drift" and not same.alert and same.p_value is not None
    assert same.p_value >= 0.05
    shifted = ks_drift(*_pair(1, shift=0.8), correction=correction)  # type: ignore[arg-type]
    assert shifted.verdict == "drift" and shifted.alert
    assert shifted.most_shifted_feature == 0
    assert shifted.p_value is not None and shifted.p_value < 1e-6
    assert shifted.effect_size is not None and 0.5 < shifted.effect_size < 1.2
    assert len(shifted.feature_p_values) == 8 == shifted.n_features
    ev = shifted.evidence()
    assert ev["verdict"] == "drift" and all(isinstance(v, float | int | str) for v in ev.values())


def test_minimum_detectable_shift_shrinks_with_n() -> None:
    small = ks_drift(*_pair(0, n=30, m=30))
    large = ks_drift(*_pair(0, n=1000, m=1000))
    assert small.minimum_detectable_shift is not None and large.minimum_detectable_shift is not None
    assert small.minimum_detectable_shift > 0.4 > 0.1 > large.minimum_detectable_shift
    # The critical distance is exactly where the corrected per-feature p-value crosses alpha/m.
    d_crit = ks_critical_distance(0.05 / 8, 300, 200)
    assert ks_p_values(np.array([d_crit * 1.001]), 300, 200)[0] < 0.05 / 8
    assert ks_p_values(np.array([d_crit * 0.999]), 300, 200)[0] > 0.05 / 8


def test_insufficient_data_is_never_no_drift() -> None:
    ref, cur = _pair(0, m=29, shift=3.0)
    res = ks_drift(ref, cur, min_samples=30)
    assert res.insufficient_data and res.verdict == "insufficient_data"
    assert res.p_value is None and not res.alert
    assert "p_value" not in res.evidence()


@pytest.mark.parametrize(
    ("ref", "cur", "kw"),
    [
        (np.empty((0, 3)), np.ones((40, 3)), {}),
        (np.ones((40, 3)), np.full((40, 3), np.nan), {}),
        (np.ones((40, 3)), np.full((40, 3), np.inf), {}),
        (np.ones((40, 3)), np.ones((40, 4)), {}),
        (np.ones(40), np.ones(40), {}),
        (np.ones((40, 3)), np.ones((40, 3)), {"alpha": 0.0}),
        (np.ones((40, 3)), np.ones((40, 3)), {"alpha": 1.5}),
        (np.ones((40, 3)), np.ones((40, 3)), {"correction": "holm"}),
        (np.ones((40, 3)), np.ones((40, 3)), {"backend": "torch"}),
    ],
)
def test_bad_inputs(ref: np.ndarray, cur: np.ndarray, kw: dict) -> None:
    with pytest.raises(InputError):
        ks_drift(ref, cur, **kw)


def test_projection_fitted_on_reference() -> None:
    ref, cur = _pair(3, d=20, shift=1.0)
    proj = fit_projection(ref, 5)
    assert proj.k == 5 and proj.dims == 20
    assert proj.transform(cur).shape == (200, 5)
    res = embedding_drift(ref, cur, proj)
    assert res.name == "embedding_ks" and res.n_features == 5
    with pytest.raises(InputError):
        fit_projection(ref[:4], 5)
    with pytest.raises(InputError):
        fit_projection(ref, 21)
    with pytest.raises(InputError):
        proj.transform(cur[:, :10])


def test_probability_drift_drops_redundant_column() -> None:
    rng = np.random.default_rng(1)
    ref = rng.dirichlet([2, 2, 2], size=300)
    same = probability_drift(ref, rng.dirichlet([2, 2, 2], size=200))
    assert same.n_features == 2 and not same.alert and same.name == "probability_ks"
    shifted = probability_drift(ref, rng.dirichlet([6, 2, 1], size=200))
    assert shifted.alert
    with pytest.raises(InputError):
        probability_drift(ref, ref * 2)
    with pytest.raises(InputError):
        probability_drift(ref[:, :1], ref[:, :1])


@pytest.mark.skipif(not HAS_ALIBI, reason="alibi-detect (optional, BSL-1.1) not installed")
@pytest.mark.parametrize("correction", ["bonferroni", "fdr_bh"])
@pytest.mark.parametrize(("seed", "shift"), [(0, 0.0), (1, 0.0), (2, 0.25), (3, 0.6), (4, 1.0)])
def test_alibi_conformance(seed: int, shift: float, correction: str) -> None:
    ref, cur = _pair(seed, shift=shift)
    ref, cur = ref.astype(np.float32), cur.astype(np.float32)
    ours = ks_drift(ref, cur, correction=correction)  # type: ignore[arg-type]
    theirs = ks_drift(ref, cur, correction=correction, backend="alibi")  # type: ignore[arg-type]
    np.testing.assert_allclose(ours.feature_p_values, theirs.feature_p_values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours.feature_statistics, theirs.feature_statistics, atol=1e-6)
    assert ours.verdict == theirs.verdict


def test_alibi_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("alibi_detect"):
            raise ImportError("no alibi")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MonitorError, match="Business Source License"):
        ks_drift(*_pair(0), backend="alibi")
