"""Performance decay once labels arrive: metrics per time window and a one-sided Welch t-test.

The unit of the test is one evaluation window (e.g. one day), not one row: rows of the same
day are correlated (same news, same outage), so testing window accuracies is the honest
choice. The reference period's window accuracies are compared with the recent period's by
``scipy.stats.ttest_ind(reference, recent, equal_var=False, alternative="greater")``.

Alert policy (separate from the statistic): alert only when ``p < alpha`` AND the mean drop
``mean(reference) - mean(recent) >= min_drop``. Fewer than ``min_windows`` windows on either
side gives ``insufficient_data`` (p_value None, no alert).

Zero variance on both sides (the t statistic is undefined): if both means are equal the
p-value is 1.0 (no evidence of a drop); if the recent mean is lower it is 0.0 (every recent
window is below every reference window with no noise at all); if higher, 1.0. This is the
limit of the Welch test as the variances shrink to zero, and it is recorded in the evidence
as ``degenerate=1``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.settings import LABELS
from monitor.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["DecayResult", "WindowMetric", "decay_test", "window_metrics"]


@dataclass(frozen=True)
class WindowMetric:
    """Accuracy and macro-F1 of one time window."""

    start: pd.Timestamp
    end: pd.Timestamp
    n: int
    correct: int
    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class DecayResult:
    """One-sided Welch t-test of reference vs recent window accuracies."""

    name: str
    statistic: float | None
    p_value: float | None
    alpha: float
    min_drop: float
    reference_mean: float | None
    recent_mean: float | None
    drop: float | None
    n_reference_windows: int
    n_recent_windows: int
    min_windows: int
    alert: bool
    insufficient_data: bool
    degenerate: bool = False

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
        """Flat numbers behind the decision (for the verdict and alerts)."""
        out: dict[str, float | int | str] = {
            "test": "welch_t_one_sided",
            "decision": self.decision,
            "alpha": self.alpha,
            "min_drop": self.min_drop,
            "n_reference_windows": self.n_reference_windows,
            "n_recent_windows": self.n_recent_windows,
            "min_windows": self.min_windows,
            "degenerate": int(self.degenerate),
        }
        for key in ("statistic", "p_value", "reference_mean", "recent_mean", "drop"):
            value = getattr(self, key)
            if value is not None:
                out[key] = float(value)
        return out


def _finite_1d(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or inf")
    if np.any((arr < 0) | (arr > 1)):
        raise InputError(f"{what} must be accuracies in [0, 1]")
    return arr


def window_metrics(
    timestamps: Sequence[object] | pd.Series | np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    *,
    freq: str = "1D",
    labels: Sequence[int] | None = None,
    min_rows: int = 1,
) -> tuple[WindowMetric, ...]:
    """Accuracy and macro-F1 per time window (empty windows and windows under ``min_rows`` dropped).

    Args:
        timestamps: One timestamp per row (anything ``pandas.to_datetime`` accepts; tz-aware
            values are converted to UTC).
        y_true: True class ids.
        y_pred: Predicted class ids.
        freq: pandas offset alias of one window (e.g. ``"1D"``, ``"6h"``).
        labels: Class ids macro-F1 averages over; default ``range(len(LABELS))``.
        min_rows: Windows with fewer labelled rows are left out.

    Raises:
        InputError: on empty input, mismatched lengths, missing timestamps or a bad ``freq``.
    """
    from sklearn.metrics import f1_score

    y_true_arr = np.asarray(y_true)
    y_pred_arr = np.asarray(y_pred)
    n = len(y_true_arr)
    if n == 0:
        raise InputError("window_metrics needs at least one labelled row")
    if len(y_pred_arr) != n or len(timestamps) != n:
        raise InputError(
            f"mismatched lengths: timestamps={len(timestamps)}, y_true={n}, y_pred={len(y_pred_arr)}"
        )
    try:
        ts = pd.to_datetime(pd.Series(np.asarray(timestamps, dtype=object)), utc=True)
    except (ValueError, TypeError) as exc:
        raise InputError(f"unparseable timestamps: {exc}") from exc
    if ts.isna().any():
        raise InputError("timestamps contain missing values")
    label_list = list(labels) if labels is not None else list(range(len(LABELS)))
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError as exc:
        raise InputError(f"invalid window frequency {freq!r}: {exc}") from exc
    frame = pd.DataFrame({"ts": ts, "y": y_true_arr, "p": y_pred_arr})
    out: list[WindowMetric] = []
    for start, group in frame.groupby(pd.Grouper(key="ts", freq=offset)):
        if len(group) < max(min_rows, 1):
            continue
        correct = int((group["y"].to_numpy() == group["p"].to_numpy()).sum())
        f1 = float(
            f1_score(group["y"], group["p"], labels=label_list, average="macro", zero_division=0)
        )
        start_ts = pd.Timestamp(start)
        out.append(
            WindowMetric(
                start=start_ts,
                end=start_ts + offset,
                n=len(group),
                correct=correct,
                accuracy=correct / len(group),
                macro_f1=f1,
            )
        )
    return tuple(out)


def decay_test(
    reference: Sequence[float],
    recent: Sequence[float],
    *,
    alpha: float = 0.05,
    min_windows: int = 3,
    min_drop: float = 0.03,
    name: str = "performance_decay",
) -> DecayResult:
    """Is recent window accuracy significantly and materially below the reference period's?

    Args:
        reference: Accuracy of each reference-period window.
        recent: Accuracy of each recent window.
        alpha: Significance level of the one-sided Welch t-test.
        min_windows: Windows needed on each side; fewer gives ``insufficient_data``.
        min_drop: Smallest mean accuracy drop (fraction) worth an alert.
        name: Name of the check in the verdict.

    Raises:
        InputError: on NaN/inf, values outside [0, 1], or invalid parameters.
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if min_windows < 2:
        raise InputError(f"min_windows must be >= 2 (a variance needs two), got {min_windows}")
    if min_drop < 0:
        raise InputError(f"min_drop must be >= 0, got {min_drop}")
    ref = _finite_1d(reference, "reference")
    rec = _finite_1d(recent, "recent")
    common = {
        "name": name,
        "alpha": alpha,
        "min_drop": min_drop,
        "n_reference_windows": len(ref),
        "n_recent_windows": len(rec),
        "min_windows": min_windows,
    }
    if len(ref) < min_windows or len(rec) < min_windows:
        logger.info("decay: %d reference / %d recent windows < %d", len(ref), len(rec), min_windows)
        return DecayResult(
            statistic=None,
            p_value=None,
            reference_mean=float(ref.mean()) if len(ref) else None,
            recent_mean=float(rec.mean()) if len(rec) else None,
            drop=float(ref.mean() - rec.mean()) if len(ref) and len(rec) else None,
            alert=False,
            insufficient_data=True,
            **common,
        )
    ref_mean, rec_mean = float(ref.mean()), float(rec.mean())
    drop = ref_mean - rec_mean
    degenerate = bool(np.ptp(ref) == 0 and np.ptp(rec) == 0)
    if degenerate:
        statistic = 0.0 if drop == 0 else math.copysign(math.inf, drop)
        p_value = 0.0 if drop > 0 else 1.0
    else:
        from scipy import stats

        res = stats.ttest_ind(ref, rec, equal_var=False, alternative="greater")
        statistic, p_value = float(res.statistic), float(res.pvalue)
        if not math.isfinite(p_value):  # pragma: no cover - guarded by the degenerate branch
            raise InputError("the t-test gave a non-finite p-value")
    alert = bool(p_value < alpha and drop >= min_drop)
    return DecayResult(
        statistic=statistic,
        p_value=p_value,
        reference_mean=ref_mean,
        recent_mean=rec_mean,
        drop=drop,
        alert=alert,
        insufficient_data=False,
        degenerate=degenerate,
        **common,
    )
