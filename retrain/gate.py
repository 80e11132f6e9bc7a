"""The champion/challenger gate: promote only a model that is better, does not forget, is not less fair.

Rules (all must hold):

(a) gain: challenger accuracy - champion accuracy on the new-domain holdout >= ``min_gain``;
(b) forgetting: champion accuracy - challenger accuracy on the frozen reference regression set
    <= ``max_forgetting``;
(c) bias: for each gap of ``monitor.bias.bias_check`` (demographic parity, equalized odds) over the
    reference set's groups, challenger gap - champion gap <= ``bias_tolerance``. When the groups
    are too small for an honest gap (``insufficient_data``) the rule is recorded as not evaluated
    (``bias_evaluated=False``) and does not block; so is a missing ``monitor.bias`` module.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from driftloop.settings import BiasSettings, RetrainSettings
from retrain.errors import RetrainError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from retrain.registry import TrackedRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    """Every number the gate looked at, its decision and the reasons for a refusal."""

    passed: bool
    reasons: tuple[str, ...]
    champion_new_accuracy: float
    challenger_new_accuracy: float
    gain: float
    min_gain: float
    champion_ref_accuracy: float
    challenger_ref_accuracy: float
    forgetting: float
    max_forgetting: float
    champion_dp_difference: float | None = None
    challenger_dp_difference: float | None = None
    champion_eo_difference: float | None = None
    challenger_eo_difference: float | None = None
    bias_tolerance: float = 0.0
    bias_evaluated: bool = False
    n_new: int = 0
    n_ref: int = 0
    notes: tuple[str, ...] = field(default=())

    def metrics(self) -> dict[str, float]:
        """The numeric fields (for MLflow), booleans as 0/1, unevaluated gaps left out."""
        out: dict[str, float] = {}
        for key, value in asdict(self).items():
            if isinstance(value, bool) or (isinstance(value, int | float) and value is not None):
                out[f"gate_{key}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["notes"] = list(self.notes)
        return data


@dataclass(frozen=True)
class GateSet:
    """The two evaluation sets of the gate: new-domain holdout and frozen reference regression set."""

    new_texts: Sequence[str]
    new_labels: np.ndarray
    ref_texts: Sequence[str]
    ref_labels: np.ndarray
    ref_groups: np.ndarray | None = None


@dataclass(frozen=True)
class GatePredictions:
    """One model's class probabilities on a :class:`GateSet`."""

    new_proba: np.ndarray
    ref_proba: np.ndarray


def predict_gate_set(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    gate_set: GateSet,
    *,
    max_length: int,
    batch_size: int = 64,
    device: str = "auto",
) -> GatePredictions:
    """Class probabilities of one model on both gate sets (via ``predict_proba``)."""
    from driftloop.models import predict_proba

    kwargs = {"batch_size": batch_size, "max_length": max_length, "device": device}
    return GatePredictions(
        new_proba=predict_proba(list(gate_set.new_texts), model, tokenizer, **kwargs),
        ref_proba=predict_proba(list(gate_set.ref_texts), model, tokenizer, **kwargs),
    )


def _preds(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    return arr.argmax(axis=1) if arr.ndim == 2 else arr.astype(np.int64)


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) == 0:
        raise RetrainError("the gate needs non-empty evaluation sets")
    if len(y_true) != len(y_pred):
        raise RetrainError(f"length mismatch: {len(y_true)} labels, {len(y_pred)} predictions")
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _bias_gaps(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    labels: Sequence[str],
    bias: BiasSettings,
) -> tuple[float | None, float | None, str | None]:
    try:
        from monitor.bias import bias_check
    except ImportError:
        return None, None, "monitor.bias is not available: bias rule not evaluated"
    result = bias_check(
        y_true,
        y_pred,
        groups,
        labels=list(range(len(labels))),  # y_true/y_pred hold label ids
        max_dp_difference=bias.max_demographic_parity_difference,
        max_eo_difference=bias.max_equalized_odds_difference,
        min_group_size=bias.min_group_size,
        min_rate_rows=bias.min_rate_rows,
    )
    dp = getattr(result, "demographic_parity_difference", None)
    eo = getattr(result, "equalized_odds_difference", None)
    if getattr(result, "insufficient_data", False) or dp is None or eo is None:
        return None, None, "groups too small for bias gaps: bias rule not evaluated"
    dp, eo = float(dp), float(eo)
    if math.isnan(dp) or math.isnan(eo):
        return None, None, "bias gaps undefined: bias rule not evaluated"
    return dp, eo, None


def evaluate_gate(
    *,
    y_new: Sequence[int] | np.ndarray,
    champion_new: np.ndarray,
    challenger_new: np.ndarray,
    y_ref: Sequence[int] | np.ndarray,
    champion_ref: np.ndarray,
    challenger_ref: np.ndarray,
    groups: Sequence[str | None] | np.ndarray | None = None,
    settings: RetrainSettings,
    bias: BiasSettings | None = None,
    labels: Sequence[str],
    mlflow_run: TrackedRun | None = None,
) -> GateResult:
    """Decide whether the challenger may replace the champion.

    Args:
        y_new: true labels of the new-domain holdout.
        champion_new: champion predictions (ids) or probabilities on the holdout.
        challenger_new: challenger predictions or probabilities on the holdout.
        y_ref: true labels of the frozen reference regression set.
        champion_ref: champion predictions or probabilities on the reference set.
        challenger_ref: challenger predictions or probabilities on the reference set.
        groups: group of each reference row for the bias rule (None: rule not evaluated).
        settings: min_gain, max_forgetting, bias_tolerance.
        bias: group-size and gap thresholds passed to ``bias_check``.
        labels: label names in id order.
        mlflow_run: when given, the gate's metrics and ``gate.json`` are logged to it.
    """
    y_new_arr = np.asarray(y_new, dtype=np.int64)
    y_ref_arr = np.asarray(y_ref, dtype=np.int64)
    champ_new_acc = _accuracy(y_new_arr, _preds(champion_new))
    chall_new_acc = _accuracy(y_new_arr, _preds(challenger_new))
    champ_ref_acc = _accuracy(y_ref_arr, _preds(champion_ref))
    chall_ref_acc = _accuracy(y_ref_arr, _preds(challenger_ref))
    gain = chall_new_acc - champ_new_acc
    forgetting = champ_ref_acc - chall_ref_acc

    reasons: list[str] = []
    notes: list[str] = []
    if gain < settings.min_gain:
        reasons.append(
            f"gain on the new-domain holdout {gain:+.3f} < min_gain {settings.min_gain:.3f} "
            f"(champion {champ_new_acc:.3f}, challenger {chall_new_acc:.3f})"
        )
    if forgetting > settings.max_forgetting:
        reasons.append(
            f"forgetting on the reference set {forgetting:.3f} > max_forgetting "
            f"{settings.max_forgetting:.3f} (champion {champ_ref_acc:.3f}, challenger {chall_ref_acc:.3f})"
        )

    dp = {"champion": None, "challenger": None}
    eo = {"champion": None, "challenger": None}
    evaluated = False
    if groups is None:
        notes.append("no groups given: bias rule not evaluated")
    else:
        group_arr = np.asarray(["" if g is None else str(g) for g in groups], dtype=object)
        mask = group_arr != ""
        bias = bias or BiasSettings()
        for who, pred in (("champion", champion_ref), ("challenger", challenger_ref)):
            d, e, note = _bias_gaps(
                y_ref_arr[mask], _preds(pred)[mask], group_arr[mask], labels, bias
            )
            dp[who], eo[who] = d, e
            if note and note not in notes:
                notes.append(note)
        evaluated = all(v is not None for v in (*dp.values(), *eo.values()))
        if evaluated:
            for name, gaps in (("demographic parity", dp), ("equalized odds", eo)):
                widening = gaps["challenger"] - gaps["champion"]  # type: ignore[operator]
                if widening > settings.bias_tolerance:
                    reasons.append(
                        f"{name} gap widens by {widening:.3f} > bias_tolerance "
                        f"{settings.bias_tolerance:.3f} ({gaps['champion']:.3f} -> {gaps['challenger']:.3f})"
                    )

    result = GateResult(
        passed=not reasons,
        reasons=tuple(reasons),
        champion_new_accuracy=champ_new_acc,
        challenger_new_accuracy=chall_new_acc,
        gain=gain,
        min_gain=settings.min_gain,
        champion_ref_accuracy=champ_ref_acc,
        challenger_ref_accuracy=chall_ref_acc,
        forgetting=forgetting,
        max_forgetting=settings.max_forgetting,
        champion_dp_difference=dp["champion"],
        challenger_dp_difference=dp["challenger"],
        champion_eo_difference=eo["champion"],
        challenger_eo_difference=eo["challenger"],
        bias_tolerance=settings.bias_tolerance,
        bias_evaluated=evaluated,
        n_new=len(y_new_arr),
        n_ref=len(y_ref_arr),
        notes=tuple(notes),
    )
    if mlflow_run is not None:
        mlflow_run.log_metrics(result.metrics())
        mlflow_run.log_dict(result.to_dict(), "gate.json")
        mlflow_run.set_tags({"gate_passed": result.passed})
    log.info("gate %s: %s", "passed" if result.passed else "refused", json.dumps(result.reasons))
    return result
