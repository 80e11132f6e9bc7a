"""Partial-shift (novelty) detector: is a minority of the window far from the reference?

Per-feature KS averages a new topic that arrives as 10-20% of traffic away. Here each row is
scored by its mean cosine distance to its ``k`` nearest reference rows (reference rows score
leave-one-out, i.e. without themselves), the threshold is the reference's ``quantile``-th
score, and the number of current rows above it is tested with its exact distribution.

Why not a binomial test against ``1 - quantile``: the threshold is itself estimated from the
reference, so the current rows' exceedances share its error and are not independent; a
binomial test then over-disperses into false alarms (measured on real MiniLM embeddings of
airline tweets, 200 vs 200: 9-12 % at alpha = 5 %). Under exchangeability of reference and
current scores, the number ``J`` of the ``m`` current scores above the ``r``-th smallest of the
``n`` reference scores has the distribution-free law
``P(J = j) = C(n - r + j, j) C(r - 1 + m - j, m - j) / C(n + m, m)`` (the exceedance statistic),
which gives an exact p-value (measured: 1.5-5.5 %).

Alert policy: significant AND the observed share exceeds the expected one by at least
``min_excess``. The p-value is valid over draws of the reference, but one reference is used
for many runs, and its own threshold may sit a little low (measured on the demo: 6.5-7 % of
fresh airline tweets above a fine-tuned champion's reference quantile where 5 % is expected).
With hundreds of rows a day such a small excess becomes significant; the practical margin
keeps it a warning, while a new topic in 10 % of the traffic (an excess of about 9 points)
still pages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from monitor.drift import _as_matrix, _check_alpha
from monitor.errors import InputError

log = logging.getLogger(__name__)

_CHUNK = 1024


@dataclass(frozen=True)
class NoveltyResult:
    """Outcome of the novelty test.

    ``statistic`` is the observed share of current rows above the threshold; ``most_novel``
    lists the most novel current rows first (positions, or ``texts_index`` entries when given).
    """

    name: str
    statistic: float | None
    p_value: float | None
    threshold: float
    score_threshold: float | None
    expected_share: float
    alert: bool
    insufficient_data: bool
    n_reference: int
    n_current: int
    n_novel: int
    k: int
    quantile: float
    min_excess: float = 0.0
    most_novel: tuple[int, ...] = field(default=(), repr=False)

    @property
    def observed_share(self) -> float | None:
        """Share of current rows above the score threshold."""
        return self.statistic

    def evidence(self) -> dict[str, float | int | str]:
        """Flat summary for reports and alerts (absent values are left out)."""
        out: dict[str, float | int | str] = {
            "name": self.name,
            "alpha": self.threshold,
            "expected_share": self.expected_share,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "n_novel": self.n_novel,
            "k": self.k,
            "quantile": self.quantile,
            "min_excess": self.min_excess,
            "verdict": "insufficient_data"
            if self.insufficient_data
            else ("novelty" if self.alert else "no_novelty"),
        }
        if self.statistic is not None:
            out["observed_share"] = self.statistic
        if self.p_value is not None:
            out["p_value"] = self.p_value
        if self.score_threshold is not None:
            out["score_threshold"] = self.score_threshold
        if self.most_novel:
            out["most_novel"] = ",".join(str(i) for i in self.most_novel)
        return out


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError("embeddings contain all-zero rows (no direction for cosine distance)")
    return (x / norms).astype(np.float32)


def knn_scores(
    reference: np.ndarray, queries: np.ndarray, k: int, *, leave_one_out: bool
) -> np.ndarray:
    """Mean cosine distance of each query row to its k nearest (unit-norm) reference rows.

    With ``leave_one_out`` the queries are the reference itself and row i skips neighbour i.
    """
    out = np.empty(queries.shape[0], dtype=np.float64)
    for start in range(0, queries.shape[0], _CHUNK):
        sims = queries[start : start + _CHUNK] @ reference.T
        if leave_one_out:
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = -np.inf
        top = np.partition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + _CHUNK] = 1.0 + top.mean(axis=1, dtype=np.float64)
    return np.clip(out, 0.0, 2.0)


def exceedance_p_value(n: int, m: int, rank: int, exceedances: int) -> float:
    """P(J >= exceedances): J current scores (of m) above the rank-th smallest of n reference
    scores, all n + m exchangeable (see the module docstring for the law of J)."""
    from scipy.special import gammaln

    if not (1 <= rank <= n and 0 <= exceedances <= m):
        raise InputError(f"need 1 <= rank <= n and 0 <= exceedances <= m: {rank=}, {n=}, {m=}")
    j = np.arange(exceedances, m + 1, dtype=np.float64)

    def log_comb(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
        return np.asarray(
            gammaln(np.add(a, 1)) - gammaln(np.add(b, 1)) - gammaln(np.subtract(a, b) + 1)
        )

    log_terms = log_comb(n - rank + j, j) + log_comb(rank - 1 + m - j, m - j) - log_comb(n + m, m)
    return float(np.clip(np.exp(log_terms).sum(), 0.0, 1.0))


def novelty_test(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    quantile: float = 0.95,
    k: int = 10,
    alpha: float = 0.05,
    min_samples: int = 30,
    texts_index: Sequence[int] | None = None,
    top: int = 10,
    min_excess: float = 0.0,
    name: str = "novelty",
) -> NoveltyResult:
    """Test whether more current rows than expected lie far from the reference.

    Args:
        reference: Reference embeddings (n, d).
        current: Current window embeddings (m, d).
        quantile: Reference score quantile used as the novelty threshold.
        k: Neighbours averaged in the score.
        alpha: Significance of the exact exceedance test; ``alert`` is ``p_value < alpha``.
        min_samples: Fewer current rows, or fewer than ``max(min_samples, k + 1)`` reference
            rows, gives ``insufficient_data``.
        texts_index: Optional ids of the current rows (e.g. prediction-log ids); when given,
            ``most_novel`` holds these ids instead of positions.
        top: How many of the most novel rows to return.
        min_excess: Smallest excess of the observed over the expected share worth an alert.
        name: Name of the check in the verdict.

    Raises:
        InputError: invalid arrays or parameters.
    """
    _check_alpha(alpha)
    if not 0.0 < quantile < 1.0:
        raise InputError(f"quantile must lie in (0, 1), got {quantile!r}")
    if k < 1:
        raise InputError(f"k must be positive, got {k}")
    if top < 0:
        raise InputError(f"top must be non-negative, got {top}")
    if not 0.0 <= min_excess < 1.0:
        raise InputError(f"min_excess must lie in [0, 1), got {min_excess!r}")
    ref = _as_matrix(reference, "reference")
    cur = _as_matrix(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise InputError(
            f"feature dimensions differ: reference {ref.shape[1]}, current {cur.shape[1]}"
        )
    if texts_index is not None and len(texts_index) != cur.shape[0]:
        raise InputError(f"texts_index has {len(texts_index)} entries for {cur.shape[0]} rows")
    n, m = ref.shape[0], cur.shape[0]
    common = {
        "name": name,
        "threshold": float(alpha),
        "expected_share": 1.0 - quantile,
        "n_reference": n,
        "n_current": m,
        "k": k,
        "quantile": quantile,
        "min_excess": min_excess,
    }
    if n < max(min_samples, k + 1) or m < min_samples:
        log.info("%s: insufficient data (reference %d, current %d)", name, n, m)
        return NoveltyResult(
            statistic=None,
            p_value=None,
            score_threshold=None,
            alert=False,
            insufficient_data=True,
            n_novel=0,
            **common,  # type: ignore[arg-type]
        )

    ref_unit, cur_unit = _normalise(ref), _normalise(cur)
    ref_scores = knn_scores(ref_unit, ref_unit, k, leave_one_out=True)
    cur_scores = knn_scores(ref_unit, cur_unit, k, leave_one_out=False)
    # Conformal quantile: the ceil((n+1)q)-th smallest reference score, so a current row
    # exchangeable with the reference exceeds it with probability at most 1 - q.
    rank = min(n, int(np.ceil((n + 1) * quantile)))
    score_threshold = float(np.sort(ref_scores)[rank - 1])
    expected = 1.0 - quantile
    novel = cur_scores > score_threshold
    n_novel = int(novel.sum())
    p_value = exceedance_p_value(n, m, rank, n_novel)
    order = np.argsort(-cur_scores, kind="stable")[: min(top, m)]
    ids = (
        tuple(int(texts_index[i]) for i in order)
        if texts_index is not None
        else tuple(int(i) for i in order)
    )
    common["expected_share"] = expected
    return NoveltyResult(
        statistic=n_novel / m,
        p_value=p_value,
        score_threshold=score_threshold,
        alert=p_value < alpha and n_novel / m - expected >= min_excess,
        insufficient_data=False,
        n_novel=n_novel,
        most_novel=ids,
        **common,  # type: ignore[arg-type]
    )
