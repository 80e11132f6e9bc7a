"""Continual-learning metrics of one retrain, in the style of Avalanche.

``forgetting`` = old-domain accuracy before - after (positive: the model forgot);
``backward_transfer`` = after - before on the old domain (= -forgetting, Lopez-Paz & Ranzato);
``forward_gain`` = new-domain accuracy after - before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from retrain.errors import RetrainError


@dataclass(frozen=True)
class ContinualReport:
    """Accuracy on the old (reference) and new domain before and after a retrain."""

    old_before: float
    old_after: float
    new_before: float
    new_after: float
    forgetting: float
    backward_transfer: float
    forward_gain: float

    def metrics(self) -> dict[str, float]:
        """Fields prefixed ``continual_`` for MLflow."""
        return {f"continual_{k}": float(v) for k, v in asdict(self).items()}


def _acc(y: np.ndarray, pred: np.ndarray) -> float:
    pred = np.asarray(pred)
    pred = pred.argmax(axis=1) if pred.ndim == 2 else pred
    if len(y) == 0 or len(y) != len(pred):
        raise RetrainError(
            f"continual metrics need matching non-empty arrays ({len(y)}, {len(pred)})"
        )
    return float(np.mean(np.asarray(y) == pred))


def continual_report(
    *,
    y_old: np.ndarray,
    old_before: np.ndarray,
    old_after: np.ndarray,
    y_new: np.ndarray,
    new_before: np.ndarray,
    new_after: np.ndarray,
) -> ContinualReport:
    """Build the report from labels and predictions (ids or probabilities) before/after."""
    ob, oa = _acc(y_old, old_before), _acc(y_old, old_after)
    nb, na = _acc(y_new, new_before), _acc(y_new, new_after)
    return ContinualReport(
        old_before=ob,
        old_after=oa,
        new_before=nb,
        new_after=na,
        forgetting=ob - oa,
        backward_transfer=oa - ob,
        forward_gain=na - nb,
    )
