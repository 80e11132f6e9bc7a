"""The label-free checks of one monitoring window, configured from the settings.

One place decides which checks a window gets and with which parameters, so the monitor flow,
the slow error-rate tests and the benchmarks measure the same thing:

* ``embedding_ks``: KS per PCA component of the embeddings (the PCA fitted on rows disjoint
  from the KS reference, see :mod:`monitor.drift`);
* ``probability_ks``: KS per class-probability column (black-box shift detection);
* ``label_shift``: the mean class-probability vector (a class-prior shift);
* ``novelty``: the share of the window far from the reference (a minority new topic);
* ``accuracy_estimate``: the label-free accuracy estimate against the reference accuracy.

Checks that need labels (decay, bias) are added by the caller once labels exist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from driftloop.settings import DecaySettings, DriftSettings
from monitor.drift import PCAProjection, embedding_drift, label_shift_test, probability_drift
from monitor.estimate import accuracy_estimate_check, estimate_accuracy, fit_calibrator
from monitor.novelty import novelty_test
from monitor.verdict import CheckLike, InsufficientCheck

log = logging.getLogger(__name__)

#: Labelled reference rows the accuracy estimate's calibrator needs (see fit_calibrator).
MIN_CALIBRATION_ROWS = 50


def label_free_checks(
    reference_embeddings: np.ndarray,
    current_embeddings: np.ndarray,
    projection: PCAProjection,
    reference_probabilities: np.ndarray,
    current_probabilities: np.ndarray,
    reference_labels: np.ndarray | None,
    *,
    drift: DriftSettings,
    decay: DecaySettings,
    probability_tolerance: float = 1e-3,
    current_ids: Sequence[int] | None = None,
) -> list[CheckLike]:
    """Every check of a window that needs no production labels.

    Args:
        reference_embeddings: The champion's reference rows, embedded (n, d).
        current_embeddings: The window's rows, embedded (m, d).
        projection: PCA fitted on rows disjoint from ``reference_embeddings``.
        reference_probabilities: The champion's class probabilities on the reference (n, k).
        current_probabilities: The logged class probabilities of the window (m, k).
        reference_labels: True class ids of the reference rows (None: no estimate).
        drift: alpha, correction, backend, min_samples and the novelty parameters.
        decay: alpha and min_drop of the accuracy estimate's alert policy.
        probability_tolerance: Allowed |sum(p) - 1| of a probability row.
        current_ids: Ids of the window's rows, so the novelty check names the most novel.

    Raises:
        InputError: invalid arrays (see each check).
    """
    ks = {
        "alpha": drift.alpha,
        "correction": drift.correction,
        "backend": drift.backend,
        "min_samples": drift.min_samples,
    }
    checks: list[CheckLike] = [
        embedding_drift(reference_embeddings, current_embeddings, projection, **ks),
        probability_drift(
            reference_probabilities,
            current_probabilities,
            tolerance=probability_tolerance,
            **ks,
        ),
        label_shift_test(
            reference_probabilities,
            current_probabilities,
            alpha=drift.alpha,
            min_samples=drift.min_samples,
            tolerance=probability_tolerance,
        ),
        novelty_test(
            reference_embeddings,
            current_embeddings,
            quantile=drift.novelty_quantile,
            k=drift.novelty_neighbours,
            alpha=drift.alpha,
            min_samples=drift.min_samples,
            min_excess=drift.novelty_min_excess,
            texts_index=current_ids,
        ),
    ]
    checks.append(
        _accuracy_estimate(
            np.asarray(reference_probabilities, dtype=float),
            reference_labels,
            np.asarray(current_probabilities, dtype=float),
            decay=decay,
            min_samples=drift.min_samples,
        )
    )
    return checks


def _accuracy_estimate(
    ref_probs: np.ndarray,
    ref_labels: np.ndarray | None,
    cur_probs: np.ndarray,
    *,
    decay: DecaySettings,
    min_samples: int,
) -> CheckLike:
    name = "accuracy_estimate"
    if ref_labels is None:
        return InsufficientCheck(name, "the reference has no labels to calibrate on", 0)
    labels = np.asarray(ref_labels, dtype=int)
    if len(labels) < MIN_CALIBRATION_ROWS:
        return InsufficientCheck(
            name,
            f"{len(labels)} labelled reference rows, fewer than the {MIN_CALIBRATION_ROWS} "
            "the calibration needs",
            len(labels),
        )
    correct = ref_probs.argmax(axis=1) == labels
    if correct.all() or not correct.any():
        return InsufficientCheck(
            name,
            "reference predictions are all right or all wrong: nothing to calibrate",
            len(labels),
        )
    calibrator = fit_calibrator(ref_probs, labels, min_rows=MIN_CALIBRATION_ROWS)
    return accuracy_estimate_check(
        float(correct.mean()),
        estimate_accuracy(calibrator, cur_probs),
        min_drop=decay.min_drop,
        alpha=decay.alpha,
        min_samples=min_samples,
    )
