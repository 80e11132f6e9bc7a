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
    label_shift_test,
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


# --- PCA fitted on the KS reference vs a disjoint fit ----------------------------------------


def test_pca_fitted_on_the_ks_reference_inflates_false_alarms() -> None:
    """Null with nearly equal variances: a PCA fitted on the KS reference picks the directions
    where that sample happens to spread most, so KS flags any second sample (about 2 in 3
    here); a disjoint fit keeps the level. Real sentence embeddings, whose spectrum decays,
    show the same bias, smaller (5.8 % against 4.3 %, see monitor.drift)."""
    rng = np.random.default_rng(0)
    same = disjoint = 0
    reps = 60
    for _ in range(reps):
        ref, cur, fit = (rng.normal(size=(100, 128)) for _ in range(3))
        same += embedding_drift(ref, cur, fit_projection(ref, 20)).alert
        disjoint += embedding_drift(ref, cur, fit_projection(fit, 20)).alert
    assert disjoint / reps <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)
    assert same / reps > 0.3


# --- label shift (mean class probabilities) ----------------------------------------------------


def _probs(rng: np.random.Generator, n: int, prior: tuple[float, float, float]) -> np.ndarray:
    """Softmax outputs of a 3-class model: a true class drawn from ``prior``, a confident bump."""
    y = rng.choice(3, size=n, p=prior)
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[y]
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def test_label_shift_level_and_power() -> None:
    rng = np.random.default_rng(5)
    null = [
        label_shift_test(_probs(rng, 500, (0.6, 0.2, 0.2)), _probs(rng, 100, (0.6, 0.2, 0.2)))
        for _ in range(300)
    ]
    rate = np.mean([r.alert for r in null])
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    shifted = label_shift_test(
        _probs(rng, 1000, (0.6, 0.2, 0.2)), _probs(rng, 200, (0.8, 0.1, 0.1))
    )
    assert shifted.alert and shifted.p_value is not None and shifted.p_value < 1e-4
    assert shifted.largest_shift_class == 0
    assert shifted.current_means[0] > shifted.reference_means[0] + 0.1
    ev = shifted.evidence()
    assert ev["verdict"] == "drift" and ev["class_0_mean_current"] == shifted.current_means[0]
    assert (
        shifted.minimum_detectable_shift is not None and 0 < shifted.minimum_detectable_shift < 0.1
    )


def test_label_shift_matches_the_one_dimensional_welch_test() -> None:
    """Two classes leave one free column: T² is Welch's t squared."""
    rng = np.random.default_rng(6)
    a = rng.beta(2, 3, size=400)
    b = rng.beta(2.4, 3, size=150)
    res = label_shift_test(np.column_stack([a, 1 - a]), np.column_stack([b, 1 - b]))
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert res.statistic == pytest.approx(welch.statistic**2, rel=1e-9)
    assert res.p_value == pytest.approx(welch.pvalue, rel=1e-6)


def test_label_shift_degenerate_and_small_windows() -> None:
    const = np.tile([0.2, 0.3, 0.5], (50, 1))
    assert label_shift_test(const, const).p_value == 1.0
    other = np.tile([0.5, 0.3, 0.2], (50, 1))
    res = label_shift_test(const, other)
    assert res.p_value == 0.0 and res.alert
    small = label_shift_test(const, const[:10])
    assert (
        small.insufficient_data and small.p_value is None and small.verdict == "insufficient_data"
    )


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        (np.full((40, 3), 1 / 3), np.full((40, 2), 0.5)),  # class counts differ
        (np.full((40, 3), 0.5), np.full((40, 3), 1 / 3)),  # rows do not sum to 1
        (np.full((40, 3), np.nan), np.full((40, 3), 1 / 3)),
        (np.ones((40, 1)), np.ones((40, 1))),
    ],
)
def test_label_shift_bad_inputs(ref: np.ndarray, cur: np.ndarray) -> None:
    with pytest.raises(InputError):
        label_shift_test(ref, cur)
