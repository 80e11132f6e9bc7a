"""Tests of monitor.estimate: the label-free accuracy estimate, on synthetic and real data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest

from monitor.errors import InputError
from monitor.estimate import (
    accuracy_estimate_check,
    estimate_accuracy,
    fit_calibrator,
)
from monitor.verdict import build_verdict

logger = logging.getLogger(__name__)


def _synthetic(n: int, seed: int, sharp: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated-by-construction 3-class probabilities and labels drawn from them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharp, (n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return probs, labels


def test_estimate_tracks_accuracy_when_calibrated() -> None:
    probs, labels = _synthetic(4000, 0)
    cal = fit_calibrator(probs, labels)
    assert cal.n_holdout + cal.n_fit == 4000 and cal.holdout_ece < 0.05
    new_probs, new_labels = _synthetic(2000, 1, sharp=1.5)  # less confident window
    est = estimate_accuracy(cal, new_probs, labels=new_labels)
    assert est.realised is not None
    assert abs(est.estimate - est.realised) < 0.04
    assert est.ci_low < est.realised < est.ci_high
    assert est.n == 2000 and 0 < est.se < 0.05


def test_check_alerts_and_passes() -> None:
    probs, labels = _synthetic(3000, 2)
    cal = fit_calibrator(probs, labels)
    same = estimate_accuracy(cal, _synthetic(1000, 3)[0])
    ok = accuracy_estimate_check(cal.reference_accuracy, same, min_drop=0.03)
    assert not ok.alert and ok.p_value is not None and ok.p_value > 0.05
    worse = estimate_accuracy(cal, _synthetic(1000, 4, sharp=1.0)[0])
    bad = accuracy_estimate_check(cal.reference_accuracy, worse, min_drop=0.03)
    assert bad.alert and bad.p_value is not None and bad.p_value < 1e-3
    assert bad.evidence()["decision"] == "alert"
    ok_named = accuracy_estimate_check(cal.reference_accuracy, same, name="estimate_same")
    assert build_verdict([ok_named, bad]).breached == ("accuracy_estimate",)


def test_check_insufficient_on_small_window() -> None:
    probs, labels = _synthetic(500, 5)
    cal = fit_calibrator(probs, labels)
    est = estimate_accuracy(cal, probs[:10])
    res = accuracy_estimate_check(0.9, est, min_samples=30)
    assert res.insufficient_data and res.p_value is None and not res.alert


@pytest.mark.parametrize(
    ("probs", "labels"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int)),
        (np.full((100, 3), np.nan), np.zeros(100, dtype=int)),
        (np.full((100, 3), 0.5), np.zeros(100, dtype=int)),  # rows sum to 1.5
        (np.tile([0.8, 0.1, 0.1], (100, 1)), np.zeros(99, dtype=int)),
        (np.tile([0.8, 0.1, 0.1], (100, 1)), np.zeros(100, dtype=int)),  # all correct
        (np.tile([0.8, 0.1, 0.1], (100, 1)), np.full(100, 5)),
    ],
)
def test_fit_bad_input(probs: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(InputError):
        fit_calibrator(probs, labels)


def test_estimate_and_check_bad_input() -> None:
    probs, labels = _synthetic(300, 6)
    cal = fit_calibrator(probs, labels)
    with pytest.raises(InputError):
        estimate_accuracy(cal, np.full((10, 2), 0.5))  # wrong number of classes
    with pytest.raises(InputError):
        estimate_accuracy(cal, probs, confidence=1.0)
    est = estimate_accuracy(cal, probs)
    with pytest.raises(InputError):
        accuracy_estimate_check(float("nan"), est)


# --- real data: the demo corpus ----------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    probs: np.ndarray
    labels: np.ndarray


@pytest.fixture(scope="module")
def airline_model(demo_rows: list[dict[str, object]]) -> dict[str, _Window]:
    """TF-IDF + LR trained on airline tweets; windows of held-out airline, other topics, mix."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    air = [r for r in demo_rows if r["topic"] == "airline"]
    other = [r for r in demo_rows if r["topic"] != "airline"]
    air = [air[i] for i in rng.permutation(len(air))]
    other = [other[i] for i in rng.permutation(len(other))[:4000]]
    train, calib, test = air[:6000], air[6000:10000], air[10000:]
    vec = TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True)
    clf = LogisticRegression(C=2.0, max_iter=1000)
    clf.fit(vec.fit_transform([str(r["text"]) for r in train]), [r["label"] for r in train])

    def window(rows: list[dict[str, object]]) -> _Window:
        probs = clf.predict_proba(vec.transform([str(r["text"]) for r in rows]))
        return _Window(probs, np.array([int(r["label"]) for r in rows]))  # type: ignore[call-overload]

    return {
        "calib": window(calib),
        "airline": window(test),
        "other": window(other),
        "mix": window(test[:2000] + other[:2000]),
    }


def test_estimate_on_demo_corpus_under_shift(airline_model: dict[str, _Window]) -> None:
    """In-domain the estimate is accurate; under topic shift it falls, but optimistically.

    Measured (seed 0): airline est 0.784 vs realised 0.796; 50/50 mix est 0.730 vs 0.601;
    other topics est 0.675 vs 0.391. The mix and shifted windows fail a 0.08 tolerance: the
    other topics are concept/label shift (new vocabulary, neutral-heavy labels), where a
    confidence-based estimate is known to be optimistic. What holds, and is asserted: in-domain
    accuracy within 0.03; the estimate falls monotonically with the share of shifted rows;
    it never reads below realised accuracy by more than 0.03 (it is an upper bound here); and
    the accuracy-estimate check alerts on the mixed and shifted windows, not on in-domain.
    """
    cal = fit_calibrator(airline_model["calib"].probs, airline_model["calib"].labels)
    results = {}
    for key in ("airline", "mix", "other"):
        w = airline_model[key]
        results[key] = estimate_accuracy(cal, w.probs, labels=w.labels)
        logger.info("%s: %s", key, results[key])
    air, mix, oth = results["airline"], results["mix"], results["other"]
    assert air.realised is not None and mix.realised is not None and oth.realised is not None
    assert abs(air.estimate - air.realised) < 0.03
    assert air.ci_low <= air.realised <= air.ci_high
    assert air.estimate > mix.estimate > oth.estimate
    assert air.estimate - oth.estimate > 0.05
    for est in results.values():
        assert est.realised is not None and est.estimate >= est.realised - 0.03
    # The documented limitation, pinned so a change in behaviour is noticed:
    assert oth.estimate - oth.realised > 0.15

    ref_acc = cal.reference_accuracy
    checks = {
        k: accuracy_estimate_check(ref_acc, v, min_drop=0.03, alpha=0.05, name=f"est_{k}")
        for k, v in results.items()
    }
    assert not checks["airline"].alert
    assert checks["mix"].alert and checks["other"].alert
