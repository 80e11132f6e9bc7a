"""Error rates of the drift detectors on real demo tweets with the real MiniLM encoder (slow).

Each text is embedded once (a pool), then windows are resampled by index. The monitored
model's class probabilities come from a stand-in: the bundled MiniLM has no fine-tuned head,
so a logistic regression trained on the reference embeddings and their human labels plays the
classifier (its probabilities are what a deployed model would log).

Detectors: the monitor flow's label-free checks (``monitor.checks.label_free_checks``: KS on
20 PCA components of the embeddings, KS on class probabilities, the label-shift test, the
novelty test and the accuracy estimate) and ``verdict``, the run's verdict over all of them
(``monitor.verdict.build_verdict``, one Benjamini-Hochberg budget; flagged = breach or warn).
The PCA is fitted on a separate pool of airline rows, as the flow fits it on the champion's
training rows. Rates are printed (``pytest -s``) and asserted. Set ``DRIFTLOOP_TEST_EMBED_CACHE`` to a
directory to keep the pool's embeddings between runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from driftloop.settings import DecaySettings, DriftSettings
from monitor.checks import label_free_checks
from monitor.drift import PCAProjection, fit_projection
from monitor.embeddings import EmbeddingCache, embed_texts
from monitor.verdict import build_verdict

pytestmark = pytest.mark.slow

ALPHA = 0.05
N_REF = 1_000
N_CUR = 200
REPS = 100
NULL_REPS = 200
AIRLINE_POOL = 3_000
FIT_POOL = 1_000
OTHER_POOL = 800
NEGATIVE = 0
DRIFT = DriftSettings(alpha=ALPHA)
DECAY = DecaySettings()


@dataclass(frozen=True)
class Pool:
    """Embeddings and stand-in probabilities of a fixed reference and resampling pools."""

    ref_emb: np.ndarray
    ref_prob: np.ndarray
    ref_label: np.ndarray
    projection: PCAProjection
    air_emb: np.ndarray
    air_prob: np.ndarray
    air_label: np.ndarray
    other_emb: np.ndarray
    other_prob: np.ndarray


@pytest.fixture(scope="module")
def pool(demo_rows) -> Pool:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    from driftloop.models import load_classifier

    rng = np.random.default_rng(42)
    airline = [r for r in demo_rows if r["topic"] == "airline"]
    other = [r for r in demo_rows if r["topic"] != "airline"]
    air_idx = rng.choice(len(airline), N_REF + AIRLINE_POOL + FIT_POOL, replace=False)
    oth_idx = rng.choice(len(other), OTHER_POOL, replace=False)
    air_rows = [airline[i] for i in air_idx]
    oth_rows = [other[i] for i in oth_idx]
    model, tokenizer = load_classifier()
    texts = [str(r["text"]) for r in air_rows + oth_rows]
    cache_dir = os.environ.get("DRIFTLOOP_TEST_EMBED_CACHE")  # reuse embeddings across runs
    if cache_dir:
        result = EmbeddingCache(Path(cache_dir)).embed(
            texts, "all-MiniLM-L6-v2", model, tokenizer, device="cpu"
        )
    else:
        result = embed_texts(texts, model, tokenizer, device="cpu")
    vectors = result.vectors
    labels = np.array([int(r["label"]) for r in air_rows])
    end = N_REF + AIRLINE_POOL
    ref_emb, air_emb, fit_emb = vectors[:N_REF], vectors[N_REF:end], vectors[end : end + FIT_POOL]
    other_emb = vectors[end + FIT_POOL :]
    # The stand-in classifier is trained on the fit pool, as the model is on its training rows.
    clf = LogisticRegression(max_iter=2_000, C=1.0).fit(fit_emb, labels[end : end + FIT_POOL])
    return Pool(
        ref_emb=ref_emb,
        ref_prob=clf.predict_proba(ref_emb),
        ref_label=labels[:N_REF],
        projection=fit_projection(fit_emb, DRIFT.pca_components),
        air_emb=air_emb,
        air_prob=clf.predict_proba(air_emb),
        air_label=labels[N_REF:end],
        other_emb=other_emb,
        other_prob=clf.predict_proba(other_emb),
    )


def _flags(ref_emb, ref_prob, ref_label, cur_emb, cur_prob, projection) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    """Each check's own decision and the run verdict's (breach or warn)."""
    checks = label_free_checks(
        ref_emb, cur_emb, projection, ref_prob, cur_prob, ref_label, drift=DRIFT, decay=DECAY
    )
    out = {c.name: bool(c.alert) for c in checks}
    out["verdict"] = build_verdict(checks, alpha=ALPHA).status in ("breach", "warn")
    return out


def _rates(runs: list[dict[str, bool]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def _report(title: str, rates: dict[str, float]) -> None:
    print(f"\n{title}: " + ", ".join(f"{k}={v:.3f}" for k, v in rates.items()))


def test_false_alarm_rate_under_no_shift(pool: Pool) -> None:
    rng = np.random.default_rng(1)
    runs = []
    for _ in range(NULL_REPS):
        idx = rng.choice(AIRLINE_POOL, 2 * N_CUR, replace=False)
        a, b = idx[:N_CUR], idx[N_CUR:]
        runs.append(
            _flags(
                pool.air_emb[a],
                pool.air_prob[a],
                pool.air_label[a],
                pool.air_emb[b],
                pool.air_prob[b],
                pool.projection,
            )
        )
    rates = _rates(runs)
    _report(f"no shift, {NULL_REPS} reps, n={N_CUR}/side (false-alarm rate)", rates)
    # The verdict is the product's decision: at most alpha. Single checks: alpha plus two
    # binomial standard errors of the estimated rate (0.015 at 200 reps).
    assert rates["verdict"] <= ALPHA
    assert all(v <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / NULL_REPS) for v in rates.values())


def _window(
    pool: Pool, cur_idx: np.ndarray, other_idx: np.ndarray | None = None
) -> dict[str, bool]:
    cur_emb, cur_prob = pool.air_emb[cur_idx], pool.air_prob[cur_idx]
    if other_idx is not None:
        cur_emb = np.vstack([cur_emb, pool.other_emb[other_idx]])
        cur_prob = np.vstack([cur_prob, pool.other_prob[other_idx]])
    return _flags(pool.ref_emb, pool.ref_prob, pool.ref_label, cur_emb, cur_prob, pool.projection)


def test_class_prior_shift_detected(pool: Pool) -> None:
    rng = np.random.default_rng(2)
    neg = np.flatnonzero(pool.air_label == NEGATIVE)
    rest = np.flatnonzero(pool.air_label != NEGATIVE)
    base = float(np.mean(pool.air_label == NEGATIVE))
    for delta in (0.10, 0.20):
        n_neg = round((base + delta) * N_CUR)
        runs = [
            _window(
                pool,
                np.concatenate(
                    [
                        rng.choice(neg, n_neg, replace=False),
                        rng.choice(rest, N_CUR - n_neg, replace=False),
                    ]
                ),
            )
            for _ in range(REPS)
        ]
        rates = _rates(runs)
        _report(f"negative share {base:.2f} -> {base + delta:.2f}, {REPS} reps (power)", rates)
    assert rates["verdict"] >= 0.90  # the 20-point shift (the bar)


def test_minority_topic_shift_detected(pool: Pool) -> None:
    rng = np.random.default_rng(3)
    for share in (0.10, 0.20):
        n_other = round(N_CUR * share)
        runs = [
            _window(
                pool,
                rng.choice(AIRLINE_POOL, N_CUR - n_other, replace=False),
                rng.choice(OTHER_POOL, n_other, replace=False),
            )
            for _ in range(REPS)
        ]
        rates = _rates(runs)
        _report(f"{share:.0%} other topics, {REPS} reps (power)", rates)
    assert rates["verdict"] >= 0.90  # the 20 % mixture (the bar)
