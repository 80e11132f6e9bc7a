"""Label-free accuracy estimate from the classifier's confidence (CBPE-style, for text).

On reference data with labels, an isotonic regression maps the top-class probability to the
chance that the prediction is correct. On an unlabelled window, the estimated accuracy is the
mean calibrated top-class probability.

Honesty:

* The calibrator is fitted on one part of the reference rows and scored on a held-out part
  (``holdout_fraction``); the final map is then refitted on all reference rows, and the
  held-out calibration bias (|mean calibrated - accuracy|) and its sampling error enter the
  confidence interval as a calibration-error term.
* CI: ``se^2 = sum p_i (1 - p_i) / n^2`` (Poisson-binomial variance of the accuracy a window
  of n rows would realise, given calibrated p_i) ``+ bias^2 + acc (1 - acc) / n_holdout``.
* Known limitation: the estimate assumes the probability-to-correctness map learnt on the
  reference still holds (pure covariate shift with a calibrated model). Under concept or label
  shift - a new topic whose words mean something else - the model is confidently wrong and the
  estimate is optimistic: it falls, but by much less than the real accuracy. On the demo
  corpus (tests/monitor/test_estimate.py) it tracks realised accuracy in domain within
  0.02, but on other topics it reads ~0.67 where the truth is ~0.39. Treat a drop of the
  estimate as a lower bound of the real drop and confirm with labels (monitor.decay).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "AccuracyEstimate",
    "AccuracyEstimateResult",
    "ConfidenceCalibrator",
    "accuracy_estimate_check",
    "estimate_accuracy",
    "fit_calibrator",
]

_PROB_TOLERANCE = 1e-3


def _check_probs(probs: Any, what: str = "probs") -> np.ndarray:
    arr = np.asarray(probs, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InputError(f"{what} must be (rows, classes>=2), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{what} is empty")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or inf")
    if np.any(arr < 0) or np.any(arr > 1):
        raise InputError(f"{what} has values outside [0, 1]")
    bad = np.abs(arr.sum(axis=1) - 1.0) > _PROB_TOLERANCE
    if np.any(bad):
        raise InputError(f"{what}: {int(bad.sum())} rows do not sum to 1")
    return arr


def _check_labels(labels: Any, n: int, n_classes: int, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(f"{what} must have one entry per row ({n}), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(int)
        else:
            raise InputError(f"{what} must be integer class ids")
    if np.any(arr < 0) or np.any(arr >= n_classes):
        raise InputError(f"{what} must lie in [0, {n_classes})")
    return arr


@dataclass(frozen=True)
class ConfidenceCalibrator:
    """Isotonic map from top-class probability to P(prediction correct), fitted on reference."""

    model: Any
    n_classes: int
    n_fit: int
    n_holdout: int
    holdout_accuracy: float
    holdout_estimate: float
    holdout_bias: float
    holdout_ece: float
    reference_accuracy: float

    @property
    def calibration_se(self) -> float:
        """Calibration-error term of the CI: held-out bias and its sampling error."""
        acc = self.holdout_accuracy
        return math.sqrt(self.holdout_bias**2 + acc * (1 - acc) / max(self.n_holdout, 1))

    def correctness(self, probs: Any) -> np.ndarray:
        """Calibrated probability that each row's top-class prediction is correct."""
        arr = _check_probs(probs)
        if arr.shape[1] != self.n_classes:
            raise InputError(f"expected {self.n_classes} classes, got {arr.shape[1]}")
        return np.clip(np.asarray(self.model.predict(arr.max(axis=1)), dtype=float), 0.0, 1.0)


@dataclass(frozen=True)
class AccuracyEstimate:
    """Estimated accuracy of one window, its CI, and the realised accuracy where labels exist."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    realised: float | None = None

    def evidence(self) -> dict[str, float | int | str]:
        """Flat numbers for reports."""
        out: dict[str, float | int | str] = {
            "estimate": self.estimate,
            "se": self.se,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "n": self.n,
        }
        if self.realised is not None:
            out["realised"] = self.realised
        return out


@dataclass(frozen=True)
class AccuracyEstimateResult:
    """One-sided z-test: is the estimated accuracy below the reference accuracy?"""

    name: str
    statistic: float | None
    p_value: float | None
    alpha: float
    min_drop: float
    reference_accuracy: float
    estimate: float
    drop: float
    se: float
    n: int
    min_samples: int
    alert: bool
    insufficient_data: bool

    @property
    def threshold(self) -> float:
        """The significance level of the test."""
        return self.alpha

    @property
    def decision(self) -> str:
        """``alert``, ``ok`` or ``insufficient_data``."""
        if self.insufficient_data:
            return "insufficient_data"
        return "alert" if self.alert else "ok"

    def evidence(self) -> dict[str, float | int | str]:
        """Flat numbers behind the decision."""
        out: dict[str, float | int | str] = {
            "test": "z_one_sided",
            "decision": self.decision,
            "alpha": self.alpha,
            "min_drop": self.min_drop,
            "reference_accuracy": self.reference_accuracy,
            "estimate": self.estimate,
            "drop": self.drop,
            "se": self.se,
            "n": self.n,
            "min_samples": self.min_samples,
        }
        if self.statistic is not None:
            out["statistic"] = self.statistic
        if self.p_value is not None:
            out["p_value"] = self.p_value
        return out


def fit_calibrator(
    reference_probs: Any,
    reference_labels: Sequence[int] | np.ndarray,
    *,
    holdout_fraction: float = 0.3,
    n_bins: int = 10,
    seed: int = 0,
    min_rows: int = 50,
) -> ConfidenceCalibrator:
    """Fit the confidence-to-correctness map on labelled reference predictions.

    Args:
        reference_probs: Class probabilities, shape (rows, classes).
        reference_labels: True class ids.
        holdout_fraction: Share of rows held out to measure the calibration error.
        n_bins: Bins of the held-out expected calibration error (reported only).
        seed: Seed of the split.
        min_rows: Fewer reference rows raise InputError.

    Raises:
        InputError: on invalid probabilities or labels, too few rows, or a reference where
            every prediction is right (or every one wrong): nothing to calibrate against.
    """
    from sklearn.isotonic import IsotonicRegression

    probs = _check_probs(reference_probs, "reference_probs")
    labels = _check_labels(reference_labels, len(probs), probs.shape[1], "reference_labels")
    if not 0 < holdout_fraction < 1:
        raise InputError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if len(probs) < min_rows:
        raise InputError(f"need at least {min_rows} reference rows, got {len(probs)}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    if correct.min() == correct.max():
        raise InputError("reference predictions are all correct or all wrong: cannot calibrate")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(probs))
    n_hold = max(1, round(len(probs) * holdout_fraction))
    hold, fit = order[:n_hold], order[n_hold:]

    def _iso(idx: np.ndarray) -> Any:
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            conf[idx], correct[idx]
        )

    split_model = _iso(fit)
    cal_hold = np.asarray(split_model.predict(conf[hold]), dtype=float)
    hold_acc = float(correct[hold].mean())
    hold_est = float(cal_hold.mean())
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(cal_hold, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(cal_hold[mask].mean() - correct[hold][mask].mean())
    model = _iso(order)  # final map: all reference rows
    logger.info(
        "calibrator: holdout acc %.4f est %.4f ece %.4f (n=%d)", hold_acc, hold_est, ece, n_hold
    )
    return ConfidenceCalibrator(
        model=model,
        n_classes=probs.shape[1],
        n_fit=len(fit),
        n_holdout=n_hold,
        holdout_accuracy=hold_acc,
        holdout_estimate=hold_est,
        holdout_bias=abs(hold_est - hold_acc),
        holdout_ece=float(ece),
        reference_accuracy=float(correct.mean()),
    )


def estimate_accuracy(
    calibrator: ConfidenceCalibrator,
    probs: Any,
    *,
    confidence: float = 0.95,
    labels: Sequence[int] | np.ndarray | None = None,
) -> AccuracyEstimate:
    """Estimated accuracy of a window from its class probabilities alone.

    Args:
        calibrator: From :func:`fit_calibrator`.
        probs: Class probabilities of the window, shape (rows, classes).
        confidence: Two-sided level of the interval.
        labels: True class ids where known; adds the realised accuracy.

    Raises:
        InputError: on invalid probabilities, labels or confidence.
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    arr = _check_probs(probs)
    p = calibrator.correctness(arr)
    n = len(p)
    estimate = float(p.mean())
    se = math.sqrt(float((p * (1 - p)).sum()) / n**2 + calibrator.calibration_se**2)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    realised = None
    if labels is not None:
        y = _check_labels(labels, n, arr.shape[1])
        realised = float((arr.argmax(axis=1) == y).mean())
    return AccuracyEstimate(
        estimate=estimate,
        se=se,
        ci_low=max(0.0, estimate - z * se),
        ci_high=min(1.0, estimate + z * se),
        confidence=confidence,
        n=n,
        realised=realised,
    )


def accuracy_estimate_check(
    reference_accuracy: float,
    estimate: AccuracyEstimate,
    *,
    min_drop: float = 0.03,
    alpha: float = 0.05,
    min_samples: int = 30,
    name: str = "accuracy_estimate",
) -> AccuracyEstimateResult:
    """Alert when the estimated accuracy is significantly below the reference, by >= min_drop.

    One-sided z-test of H0 "accuracy >= reference" on the estimate's standard error (which
    already carries the calibration error): ``z = (reference - estimate) / se``,
    ``p = 1 - Phi(z)``. Alert iff ``p < alpha`` and ``reference - estimate >= min_drop``.
    Windows under ``min_samples`` rows give ``insufficient_data``.

    Raises:
        InputError: on a reference accuracy outside [0, 1] or invalid parameters.
    """
    from scipy import stats

    if not (0.0 <= reference_accuracy <= 1.0):  # also rejects NaN
        raise InputError(f"reference_accuracy must be in [0, 1], got {reference_accuracy}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if min_drop < 0:
        raise InputError(f"min_drop must be >= 0, got {min_drop}")
    drop = float(reference_accuracy - estimate.estimate)
    common = {
        "name": name,
        "alpha": alpha,
        "min_drop": min_drop,
        "reference_accuracy": float(reference_accuracy),
        "estimate": estimate.estimate,
        "drop": drop,
        "se": estimate.se,
        "n": estimate.n,
        "min_samples": min_samples,
    }
    if estimate.n < min_samples:
        return AccuracyEstimateResult(
            statistic=None, p_value=None, alert=False, insufficient_data=True, **common
        )
    if estimate.se <= 0 or not math.isfinite(estimate.se):
        raise InputError(f"the estimate's standard error must be positive, got {estimate.se}")
    z = drop / estimate.se
    p_value = float(stats.norm.sf(z))
    return AccuracyEstimateResult(
        statistic=float(z),
        p_value=p_value,
        alert=bool(p_value < alpha and drop >= min_drop),
        insufficient_data=False,
        **common,
    )
