"""Error rates of the drift detectors on real demo tweets with the real MiniLM encoder (slow).

Each text is embedded once (a pool), then windows are resampled by index. The monitored
model's class probabilities come from a stand-in: the bundled MiniLM has no fine-tuned head,
so a logistic regression trained on the reference embeddings and their human labels plays the
classifier (its probabilities are what a deployed model would log).

Detectors: KS on 20 PCA components of the embeddings, KS on class probabilities (last column
dropped), and the novelty test; ``combined`` is Bonferroni over the three (min p * 3 < alpha).
Rates are printed (``pytest -s``) and asserted. Set ``DRIFTLOOP_TEST_EMBED_CACHE`` to a
directory to keep the pool's embeddings between runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from monitor.drift import embedding_drift, fit_projection, probability_drift
from monitor.embeddings import EmbeddingCache, embed_texts
from monitor.novelty import novelty_test

pytestmark = pytest.mark.slow

ALPHA = 0.05
N_REF = 1_000
N_CUR = 200
REPS = 100
NULL_REPS = 200
AIRLINE_POOL = 3_000
OTHER_POOL = 800
NEGATIVE = 0


@dataclass(frozen=True)
class Pool:
    """Embeddings and stand-in probabilities of a fixed reference and resampling pools."""

    ref_emb: np.ndarray
    ref_prob: np.ndarray
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
    air_idx = rng.choice(len(airline), N_REF + AIRLINE_POOL, replace=False)
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
    ref_emb, air_emb = vectors[:N_REF], vectors[N_REF : N_REF + AIRLINE_POOL]
    other_emb = vectors[N_REF + AIRLINE_POOL :]
    clf = LogisticRegression(max_iter=2_000, C=1.0).fit(ref_emb, labels[:N_REF])
    return Pool(
        ref_emb=ref_emb,
        ref_prob=clf.predict_proba(ref_emb),
        air_emb=air_emb,
        air_prob=clf.predict_proba(air_emb),
        air_label=labels[N_REF:],
        other_emb=other_emb,
        other_prob=clf.predict_proba(other_emb),
    )


def _p_values(ref_emb, ref_prob, cur_emb, cur_prob, projection) -> dict[str, float]:  # type: ignore[no-untyped-def]
    p = {
        "embedding_ks": embedding_drift(ref_emb, cur_emb, projection, alpha=ALPHA).p_value,
        "probability_ks": probability_drift(ref_prob, cur_prob, alpha=ALPHA).p_value,
        "novelty": novelty_test(ref_emb, cur_emb, alpha=ALPHA).p_value,
    }
    out = {k: float(v) for k, v in p.items() if v is not None}
    out["combined"] = min(1.0, 3 * min(out.values()))
    return out


def _rates(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] < ALPHA for r in runs])) for k in runs[0]}


def _report(title: str, rates: dict[str, float]) -> None:
    print(f"\n{title}: " + ", ".join(f"{k}={v:.3f}" for k, v in rates.items()))


def test_false_alarm_rate_under_no_shift(pool: Pool) -> None:
    rng = np.random.default_rng(1)
    runs = []
    for _ in range(NULL_REPS):
        idx = rng.choice(AIRLINE_POOL, 2 * N_CUR, replace=False)
        a, b = idx[:N_CUR], idx[N_CUR:]
        proj = fit_projection(pool.air_emb[a], 20)
        runs.append(
            _p_values(pool.air_emb[a], pool.air_prob[a], pool.air_emb[b], pool.air_prob[b], proj)
        )
    rates = _rates(runs)
    _report(f"no shift, {NULL_REPS} reps, n={N_CUR}/side (false-alarm rate)", rates)
    # alpha plus two binomial standard errors of the estimated rate (0.015 at 200 reps).
    assert all(v <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / NULL_REPS) for v in rates.values())
    assert rates["combined"] <= ALPHA


def test_class_prior_shift_detected(pool: Pool) -> None:
    rng = np.random.default_rng(2)
    proj = fit_projection(pool.ref_emb, 20)
    neg = np.flatnonzero(pool.air_label == NEGATIVE)
    rest = np.flatnonzero(pool.air_label != NEGATIVE)
    share = float(np.mean(pool.air_label == NEGATIVE)) + 0.20
    n_neg = round(share * N_CUR)
    runs = []
    for _ in range(REPS):
        idx = np.concatenate(
            [rng.choice(neg, n_neg, replace=False), rng.choice(rest, N_CUR - n_neg, replace=False)]
        )
        runs.append(
            _p_values(pool.ref_emb, pool.ref_prob, pool.air_emb[idx], pool.air_prob[idx], proj)
        )
    rates = _rates(runs)
    _report(f"negative share {share - 0.2:.2f} -> {share:.2f}, {REPS} reps (power)", rates)
    assert rates["combined"] >= 0.90


def test_minority_topic_shift_detected(pool: Pool) -> None:
    rng = np.random.default_rng(3)
    proj = fit_projection(pool.ref_emb, 20)
    n_other = N_CUR // 5
    runs = []
    for _ in range(REPS):
        a = rng.choice(AIRLINE_POOL, N_CUR - n_other, replace=False)
        o = rng.choice(OTHER_POOL, n_other, replace=False)
        cur_emb = np.vstack([pool.air_emb[a], pool.other_emb[o]])
        cur_prob = np.vstack([pool.air_prob[a], pool.other_prob[o]])
        runs.append(_p_values(pool.ref_emb, pool.ref_prob, cur_emb, cur_prob, proj))
    rates = _rates(runs)
    _report(f"20% other topics, {REPS} reps (power)", rates)
    assert rates["combined"] >= 0.90
