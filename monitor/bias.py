"""Group fairness over a segment attribute (e.g. the airline a tweet addresses).

Per group (fairlearn ``MetricFrame``): rows, accuracy, and per class one-vs-rest the selection
rate P(pred = c), true-positive rate P(pred = c | true = c) and false-positive rate
P(pred = c | true != c).

Differences (multiclass, one-vs-rest, the max over classes):

* demographic-parity difference: ``max_c (max_g sel[g, c] - min_g sel[g, c])``;
* equalized-odds difference: ``max_c max(TPR gap_c, FPR gap_c)`` (fairlearn's binary
  definition applied per class). A rate enters a gap only where the group has at least
  ``min_rate_rows`` rows in its denominator (true class-c rows for the TPR, the others for the
  FPR): a rate of 1 row in 2 is noise, and an undefined rate is never read as 0.

Only groups with at least ``min_group_size`` rows are judged; smaller groups are reported
with ``judged=False``. Fewer than two judged groups (including no rows at all: labels not
arrived yet) gives ``insufficient_data``.

Each gap has its own test, so a gap is only called credible by a test of that gap:

* demographic parity: chi-square test of independence, group x predicted class;
* equalized odds: per class, chi-square tests of group x (pred = c) among the true class-c
  rows (TPR) and among the others (FPR), over the groups whose rate enters the gap,
  Bonferroni over those tests.

Alert policy: a gap above its threshold AND its test below ``alpha`` AND, when a ``baseline``
is given (the champion's own gaps on its frozen regression set, the state that was accepted
when it was promoted), wider than the baseline's gap by more than ``worsening_tolerance``. A
known gap that has not widened is therefore significant but not an alert: the verdict shows
it as a warning every run instead of paging for it every run. ``max_dp_difference``
may be None (the default of the settings): demographic parity is then reported, not judged.
That default is deliberate: selection rates follow each group's base rate (customers of one
airline really are angrier than another's), so parity gaps of a correct model are large and
significant; equalized odds compares error rates, which is the model's own doing. The
p-value handed to the verdict covers the judged gaps only (Bonferroni over them), so an
unjudged parity gap never turns into a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["BiasResult", "GroupMetrics", "bias_check"]


@dataclass(frozen=True)
class GroupMetrics:
    """Metrics of one group; per-class tuples follow the order of ``labels``."""

    group: str
    n: int
    judged: bool
    accuracy: float
    selection_rate: tuple[float, ...]
    true_positive_rate: tuple[float | None, ...]
    false_positive_rate: tuple[float | None, ...]


@dataclass(frozen=True)
class BiasResult:
    """Demographic-parity and equalized-odds differences across judged groups."""

    name: str
    labels: tuple[str, ...]
    groups: tuple[GroupMetrics, ...]
    demographic_parity_difference: float | None
    equalized_odds_difference: float | None
    dp_worst: tuple[str, str, str] | None
    eo_worst: tuple[str, str, str] | None
    max_dp_difference: float | None
    max_eo_difference: float
    min_group_size: int
    min_rate_rows: int
    alpha: float
    baseline_dp_difference: float | None
    baseline_eo_difference: float | None
    worsening_tolerance: float
    statistic: float | None
    p_value: float | None
    p_value_prediction: float | None
    p_value_equalized_odds: float | None
    p_value_correctness: float | None
    n: int
    n_judged_groups: int
    alert: bool
    insufficient_data: bool

    @property
    def threshold(self) -> dict[str, float]:
        """The practical thresholds of the judged differences."""
        out = {"equalized_odds": self.max_eo_difference}
        if self.max_dp_difference is not None:
            out["demographic_parity"] = self.max_dp_difference
        return out

    @property
    def decision(self) -> str:
        """``alert``, ``ok`` or ``insufficient_data``."""
        if self.insufficient_data:
            return "insufficient_data"
        return "alert" if self.alert else "ok"

    def evidence(self) -> dict[str, float | int | str]:
        """Flat numbers behind the decision."""
        out: dict[str, float | int | str] = {
            "test": "chi2_independence_per_gap_bonferroni",
            "decision": self.decision,
            "alpha": self.alpha,
            "max_dp_difference": "not judged"
            if self.max_dp_difference is None
            else self.max_dp_difference,
            "max_eo_difference": self.max_eo_difference,
            "min_group_size": self.min_group_size,
            "min_rate_rows": self.min_rate_rows,
            "n": self.n,
            "n_groups": len(self.groups),
            "n_judged_groups": self.n_judged_groups,
        }
        out["worsening_tolerance"] = self.worsening_tolerance
        for key in (
            "baseline_dp_difference",
            "baseline_eo_difference",
            "demographic_parity_difference",
            "equalized_odds_difference",
            "statistic",
            "p_value",
            "p_value_prediction",
            "p_value_equalized_odds",
            "p_value_correctness",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = float(value)
        if self.dp_worst:
            out["dp_worst"] = f"{self.dp_worst[0]}: {self.dp_worst[1]} vs {self.dp_worst[2]}"
        if self.eo_worst:
            out["eo_worst"] = f"{self.eo_worst[0]}: {self.eo_worst[1]} vs {self.eo_worst[2]}"
        return out


def _rate(num: np.ndarray, den: np.ndarray) -> float:
    return float(num.sum() / den.sum()) if den.sum() > 0 else math.nan


def _chi2_p(table: np.ndarray) -> float:
    from scipy import stats

    table = table[:, table.sum(axis=0) > 0]  # drop categories nobody has
    if table.shape[1] < 2 or table.shape[0] < 2:
        return 1.0  # no variation: no evidence of dependence
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _widened(gap: float, baseline: float | None, tolerance: float) -> bool:
    """True without a baseline gap, else when ``gap`` exceeds it by more than ``tolerance``."""
    return baseline is None or gap > baseline + tolerance


def _largest(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _equalized_odds_p(
    groups: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    names: list[str],
    k: int,
    tpr_used: np.ndarray,
    fpr_used: np.ndarray,
) -> float:
    """Bonferroni over the per-class TPR and FPR chi-square tests of the groups in the gap."""
    p_values = []
    for c in range(k):
        for used, rows in ((tpr_used[:, c], y_true == c), (fpr_used[:, c], y_true != c)):
            kept = [g for g, rate in zip(names, used, strict=True) if not math.isnan(rate)]
            if len(kept) < 2:
                continue
            hit = y_pred == c
            table = np.array(
                [
                    [np.sum(rows & (groups == g) & hit), np.sum(rows & (groups == g) & ~hit)]
                    for g in kept
                ]
            )
            p_values.append(_chi2_p(table))
    if not p_values:
        return 1.0  # no rate with enough rows in two groups: no evidence of a gap
    return min(1.0, len(p_values) * min(p_values))


def _worst_gap(
    matrix: np.ndarray, names: list[str], labels: tuple[str, ...]
) -> tuple[float | None, tuple[str, str, str] | None]:
    """Largest max-min gap over columns (classes), ignoring NaN; with (class, high, low)."""
    best: tuple[float | None, tuple[str, str, str] | None] = (None, None)
    for c, label in enumerate(labels):
        col = matrix[:, c]
        ok = ~np.isnan(col)
        if ok.sum() < 2:
            continue
        idx = np.flatnonzero(ok)
        hi, lo = idx[np.argmax(col[ok])], idx[np.argmin(col[ok])]
        gap = float(col[hi] - col[lo])
        if best[0] is None or gap > best[0]:
            best = (gap, (label, names[hi], names[lo]))
    return best


def bias_check(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    groups: Sequence[Hashable] | np.ndarray,
    *,
    labels: Sequence[Any],
    max_dp_difference: float | None = None,
    max_eo_difference: float = 0.25,
    min_group_size: int = 30,
    min_rate_rows: int = 10,
    alpha: float = 0.05,
    baseline: BiasResult | None = None,
    worsening_tolerance: float = 0.1,
    name: str = "bias",
) -> BiasResult:
    """Per-group metrics, parity differences and their significance over a segment attribute.

    Args:
        y_true: True classes (values from ``labels``).
        y_pred: Predicted classes (values from ``labels``).
        groups: Segment value of each row (e.g. the airline); None/NaN is not allowed.
        labels: All classes, in report order (at least two).
        max_dp_difference: Demographic-parity difference above which the gap is material;
            None: reported, not judged (see the module docstring).
        max_eo_difference: Equalized-odds difference above which the gap is material.
        min_group_size: Smaller groups are reported but not judged.
        min_rate_rows: A group's TPR/FPR enters the equalized-odds gap only from this many
            rows in its denominator.
        baseline: The champion's own result on its frozen regression set; its gaps are the
            accepted state (None, or a baseline without gaps: thresholds alone decide).
        worsening_tolerance: How much wider than the baseline's a gap must be to alert.
        alpha: Level of the chi-square tests in the alert policy.
        name: Name of the check in the verdict.

    Raises:
        InputError: on mismatched inputs, missing groups, unknown classes, fewer than
            two labels, or invalid parameters.
    """
    from fairlearn.metrics import (
        MetricFrame,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    label_list = list(labels)
    if len(label_list) < 2 or len(set(label_list)) != len(label_list):
        raise InputError("labels must be at least two distinct classes")
    yt, yp = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    g = np.asarray(groups, dtype=object)
    n = len(yt)
    if len(yp) != n or len(g) != n:
        raise InputError(f"mismatched lengths: y_true={n}, y_pred={len(yp)}, groups={len(g)}")
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in g):
        raise InputError("groups contain missing values (None/NaN)")
    index = {lab: i for i, lab in enumerate(label_list)}
    try:
        ti = np.array([index[v] for v in yt])
        pi = np.array([index[v] for v in yp])
    except (KeyError, TypeError) as exc:
        raise InputError(f"class not in labels {label_list}: {exc}") from exc
    for what, value in (
        ("max_dp_difference", max_dp_difference),
        ("max_eo_difference", max_eo_difference),
    ):
        if value is not None and not 0 <= value <= 1:
            raise InputError(f"{what} must be in [0, 1], got {value}")
    if min_group_size < 2:
        raise InputError(f"min_group_size must be >= 2, got {min_group_size}")
    if min_rate_rows < 1:
        raise InputError(f"min_rate_rows must be >= 1, got {min_rate_rows}")
    if not 0 <= worsening_tolerance <= 1:
        raise InputError(f"worsening_tolerance must be in [0, 1], got {worsening_tolerance}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    base_dp = None if baseline is None else baseline.demographic_parity_difference
    base_eo = None if baseline is None else baseline.equalized_odds_difference

    if n == 0:  # no labelled rows in the window yet: nothing to judge, not an error
        logger.info("bias: no labelled rows")
        return BiasResult(
            name=name,
            labels=tuple(str(x) for x in label_list),
            groups=(),
            demographic_parity_difference=None,
            equalized_odds_difference=None,
            dp_worst=None,
            eo_worst=None,
            max_dp_difference=max_dp_difference,
            max_eo_difference=max_eo_difference,
            min_group_size=min_group_size,
            min_rate_rows=min_rate_rows,
            alpha=alpha,
            baseline_dp_difference=base_dp,
            baseline_eo_difference=base_eo,
            worsening_tolerance=worsening_tolerance,
            statistic=None,
            p_value=None,
            p_value_prediction=None,
            p_value_equalized_odds=None,
            p_value_correctness=None,
            n=0,
            n_judged_groups=0,
            alert=False,
            insufficient_data=True,
        )
    gs = np.array([str(v) for v in g])
    correct = (ti == pi).astype(int)
    overall = MetricFrame(
        metrics={"accuracy": lambda t, p: float(np.mean(t == p)), "n": lambda t, p: len(t)},
        y_true=ti,
        y_pred=pi,
        sensitive_features=gs,
    ).by_group
    names = [str(x) for x in overall.index]
    k = len(label_list)
    sel = np.full((len(names), k), math.nan)
    tpr = np.full((len(names), k), math.nan)
    fpr = np.full((len(names), k), math.nan)
    # Rows behind each rate: a rate from fewer than min_rate_rows rows stays out of the gaps.
    tpr_rows = np.zeros((len(names), k), dtype=int)
    fpr_rows = np.zeros((len(names), k), dtype=int)
    for c in range(k):
        bt, bp = (ti == c).astype(int), (pi == c).astype(int)
        frame = MetricFrame(
            metrics={"selection_rate": selection_rate},
            y_true=bt,
            y_pred=bp,
            sensitive_features=gs,
        ).by_group
        sel[:, c] = frame.loc[names, "selection_rate"].to_numpy(dtype=float)
        # TPR/FPR are undefined where a group has no positives / negatives of class c;
        # fairlearn would warn and return 0 there, so compute only where defined.
        for gi, gname in enumerate(names):
            mask = gs == gname
            tpr_rows[gi, c], fpr_rows[gi, c] = int(bt[mask].sum()), int((1 - bt[mask]).sum())
            if tpr_rows[gi, c] > 0:
                tpr[gi, c] = float(true_positive_rate(bt[mask], bp[mask]))
            if fpr_rows[gi, c] > 0:
                fpr[gi, c] = float(false_positive_rate(bt[mask], bp[mask]))

    def _opt(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    sizes = overall["n"].to_numpy(dtype=int)
    judged = sizes >= min_group_size
    group_rows = tuple(
        GroupMetrics(
            group=names[i],
            n=int(sizes[i]),
            judged=bool(judged[i]),
            accuracy=float(overall["accuracy"].iloc[i]),
            selection_rate=tuple(float(x) for x in sel[i]),
            true_positive_rate=tuple(_opt(x) for x in tpr[i]),
            false_positive_rate=tuple(_opt(x) for x in fpr[i]),
        )
        for i in range(len(names))
    )
    label_names = tuple(str(x) for x in label_list)
    common: dict[str, Any] = {
        "name": name,
        "labels": label_names,
        "groups": group_rows,
        "max_dp_difference": max_dp_difference,
        "max_eo_difference": max_eo_difference,
        "min_group_size": min_group_size,
        "min_rate_rows": min_rate_rows,
        "alpha": alpha,
        "baseline_dp_difference": base_dp,
        "baseline_eo_difference": base_eo,
        "worsening_tolerance": worsening_tolerance,
        "n": n,
        "n_judged_groups": int(judged.sum()),
    }
    if judged.sum() < 2:
        logger.info("bias: %d judged groups (min size %d)", judged.sum(), min_group_size)
        return BiasResult(
            demographic_parity_difference=None,
            equalized_odds_difference=None,
            dp_worst=None,
            eo_worst=None,
            statistic=None,
            p_value=None,
            p_value_prediction=None,
            p_value_equalized_odds=None,
            p_value_correctness=None,
            alert=False,
            insufficient_data=True,
            **common,
        )
    jnames = [names[i] for i in np.flatnonzero(judged)]
    tpr_used = np.where(tpr_rows[judged] >= min_rate_rows, tpr[judged], math.nan)
    fpr_used = np.where(fpr_rows[judged] >= min_rate_rows, fpr[judged], math.nan)
    dp, dp_worst = _worst_gap(sel[judged], jnames, label_names)
    tpr_gap, tpr_worst = _worst_gap(tpr_used, jnames, label_names)
    fpr_gap, fpr_worst = _worst_gap(fpr_used, jnames, label_names)
    eo, eo_worst = tpr_gap, tpr_worst
    if fpr_gap is not None and (eo is None or fpr_gap > eo):
        eo, eo_worst = fpr_gap, fpr_worst
    if eo_worst is not None:
        kind = "TPR" if eo_worst is tpr_worst else "FPR"
        eo_worst = (f"{eo_worst[0]} ({kind})", eo_worst[1], eo_worst[2])

    in_judged = np.isin(gs, jnames)
    jg, jt, jp, jc = gs[in_judged], ti[in_judged], pi[in_judged], correct[in_judged]
    pred_table = np.array([[np.sum((jg == gn) & (jp == c)) for c in range(k)] for gn in jnames])
    corr_table = np.array([[np.sum((jg == gn) & (jc == v)) for v in (0, 1)] for gn in jnames])
    p_pred, p_corr = _chi2_p(pred_table), _chi2_p(corr_table)
    p_eo = _equalized_odds_p(jg, jt, jp, jnames, k, tpr_used, fpr_used)

    judged_tests = [p_eo] + ([p_pred] if max_dp_difference is not None else [])
    p_value = min(1.0, len(judged_tests) * min(judged_tests))
    dp_material = (
        max_dp_difference is not None
        and dp is not None
        and dp > max_dp_difference
        and _widened(dp, base_dp, worsening_tolerance)
    )
    eo_material = (
        eo is not None and eo > max_eo_difference and _widened(eo, base_eo, worsening_tolerance)
    )
    alert = bool((dp_material and p_pred < alpha) or (eo_material and p_eo < alpha))
    logger.info("bias: dp=%s eo=%s p=%.3g alert=%s", dp, eo, p_value, alert)
    return BiasResult(
        demographic_parity_difference=dp,
        equalized_odds_difference=eo,
        dp_worst=dp_worst,
        eo_worst=eo_worst,
        statistic=_largest(eo, dp if max_dp_difference is not None else None),
        p_value=p_value,
        p_value_prediction=p_pred,
        p_value_equalized_odds=p_eo,
        p_value_correctness=p_corr,
        alert=alert,
        insufficient_data=False,
        **common,
    )
