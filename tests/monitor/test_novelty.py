"""Novelty (partial shift): no alert on the reference distribution, alert on a new cluster."""

from __future__ import annotations

import time

import numpy as np
import pytest

from monitor.errors import InputError
from monitor.novelty import exceedance_p_value, knn_scores, novelty_test


def _clusters(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    which = rng.integers(0, len(centres), size=n)
    return centres[which] + 0.35 * rng.normal(size=(n, centres.shape[1]))


@pytest.fixture
def space() -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32))
    novel_centre = rng.normal(size=(1, 32))
    return rng, centres, novel_centre


def test_same_distribution_no_alert(space) -> None:  # type: ignore[no-untyped-def]
    rng, centres, _ = space
    res = novelty_test(_clusters(rng, 1000, centres), _clusters(rng, 200, centres))
    assert not res.insufficient_data and not res.alert
    assert res.p_value is not None and res.p_value > 0.05
    assert res.expected_share == pytest.approx(0.05)
    assert res.evidence()["verdict"] == "no_novelty"


def test_minority_new_topic_alerts_and_is_ranked_first(space) -> None:  # type: ignore[no-untyped-def]
    rng, centres, novel_centre = space
    ref = _clusters(rng, 1000, centres)
    cur = _clusters(rng, 200, centres)
    cur[:30] = _clusters(rng, 30, novel_centre)  # 15% of the window
    res = novelty_test(ref, cur, top=10, texts_index=list(range(1000, 1200)))
    assert res.alert and res.p_value is not None and res.p_value < 1e-6
    assert res.observed_share is not None and res.observed_share >= 0.15
    assert len(res.most_novel) == 10 and all(1000 <= i < 1030 for i in res.most_novel)


def test_leave_one_out_excludes_self() -> None:
    ref = np.eye(4, dtype=np.float32)
    scores = knn_scores(ref, ref, 1, leave_one_out=True)
    np.testing.assert_allclose(scores, 1.0)  # orthogonal neighbours, never itself (0)


def test_insufficient_data(space) -> None:  # type: ignore[no-untyped-def]
    rng, centres, _ = space
    res = novelty_test(_clusters(rng, 1000, centres), _clusters(rng, 10, centres))
    assert res.insufficient_data and res.p_value is None and not res.alert


@pytest.mark.parametrize(
    "kw", [{"quantile": 1.0}, {"k": 0}, {"alpha": 0.0}, {"texts_index": [1, 2]}, {"top": -1}]
)
def test_bad_inputs(space, kw: dict) -> None:  # type: ignore[no-untyped-def]
    rng, centres, _ = space
    with pytest.raises(InputError):
        novelty_test(_clusters(rng, 100, centres), _clusters(rng, 50, centres), **kw)
    with pytest.raises(InputError):
        novelty_test(np.ones((100, 3)), np.ones((50, 4)))
    with pytest.raises(InputError):
        novelty_test(np.zeros((100, 3)), np.ones((50, 3)))


def test_fast_on_5000_by_384() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(5000, 384)).astype(np.float32)
    cur = rng.normal(size=(500, 384)).astype(np.float32)
    start = time.perf_counter()
    novelty_test(ref, cur)
    assert time.perf_counter() - start < 10.0


def test_false_alarm_rate_at_most_alpha_with_a_small_reference() -> None:
    """The threshold is estimated from the reference; the exact exceedance test accounts for
    that (a binomial test against 5 % did not: about 10 % false alarms here)."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(6, 16))
    reps = 300
    alerts = sum(
        novelty_test(_clusters(rng, 150, centres), _clusters(rng, 150, centres)).alert
        for _ in range(reps)
    )
    assert alerts / reps <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)


def test_exceedance_law_matches_enumeration() -> None:
    import itertools

    n, m, r = 6, 4, 4
    counts = np.zeros(m + 1)
    for cur in itertools.combinations(range(n + m), m):
        ref = [i for i in range(n + m) if i not in cur]
        counts[sum(p > ref[r - 1] for p in cur)] += 1
    tail = counts[::-1].cumsum()[::-1] / counts.sum()
    for j in range(m + 1):
        assert exceedance_p_value(n, m, r, j) == pytest.approx(tail[j], abs=1e-12)
    with pytest.raises(InputError):
        exceedance_p_value(n, m, n + 1, 0)


def test_a_small_excess_is_significant_but_not_an_alert(space) -> None:  # type: ignore[no-untyped-def]
    rng, centres, novel_centre = space
    ref = _clusters(rng, 1000, centres)
    cur = np.vstack([_clusters(rng, 970, centres), _clusters(rng, 30, novel_centre)])
    strict = novelty_test(ref, cur)
    lenient = novelty_test(ref, cur, min_excess=0.05)
    assert strict.alert and strict.p_value is not None and strict.p_value < 0.05
    assert strict.statistic is not None and strict.statistic - 0.05 < 0.05
    assert lenient.p_value == strict.p_value and not lenient.alert
    assert lenient.evidence()["min_excess"] == 0.05
    with pytest.raises(InputError):
        novelty_test(ref, cur, min_excess=1.0)
