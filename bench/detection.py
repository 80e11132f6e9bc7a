"""Detection power and false alarms of driftloop's drift checks against Evidently and alibi-detect.

Every method sees the same reference and current windows, index resamples of precomputed
MiniLM embeddings (see :mod:`bench.datasets`). Class probabilities come from a logistic-regression
head fitted on a separate split of the source domain's embeddings: it stands in for the
fine-tuned model's softmax (black-box shift detection on the model's outputs).
"""

from __future__ import annotations

import logging
import time
import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.datasets import Domain

log = logging.getLogger(__name__)

ALPHA = 0.05
PCA_COMPONENTS = 20  # driftloop default (settings.drift.pca_components)
MIN_SAMPLES = 30  # driftloop default (settings.drift.min_samples)
NOVELTY_QUANTILE = 0.95
NOVELTY_K = 10
REFERENCE_SIZE = 1000  # driftloop default (settings.drift.reference_size)
HEAD_ROWS = {"uci": 300, "blitzer": 450, "sst2": 1000, "demo": 1000}
REFERENCE_ROWS = {"uci": 400, "blitzer": 1000, "sst2": 1000, "demo": 1000}

METHODS: dict[str, str] = {
    "dl_emb_ks": "driftloop KS on PCA-20 embeddings (Bonferroni)",
    "dl_prob_ks": "driftloop KS on class probabilities (Bonferroni)",
    "dl_novelty": "driftloop kNN novelty (binomial test)",
    "dl_verdict": "driftloop verdict (3 checks, BH-FDR; breach or warn)",
    "ev_model": "Evidently EmbeddingsDrift, default (domain classifier ROC AUC)",
    "ev_mmd": "Evidently EmbeddingsDrift, MMD method (defaults)",
    "alibi_ks": "alibi-detect KSDrift, raw 384-d embeddings (Bonferroni)",
    "alibi_mmd": "alibi-detect MMDDrift, PyTorch backend (permutation test)",
}
DRIFTLOOP = ("dl_emb_ks", "dl_prob_ks", "dl_novelty", "dl_verdict")
PEERS = ("ev_model", "ev_mmd", "alibi_ks", "alibi_mmd")


@dataclass(frozen=True)
class Shift:
    """One benchmark condition: where the reference and the current window come from."""

    family: str
    name: str
    source: str
    target: str | None = None  # None: control or prior shift inside the source
    fraction: float = 1.0  # share of the current window drawn from the target
    prior_delta: float = 0.0  # raise of the negative-class share (points / 100)

    @property
    def kind(self) -> str:
        if self.prior_delta:
            return "prior"
        if self.target is None:
            return "control"
        return "mixture" if self.fraction < 1.0 else "domain"


def shifts(quick: bool) -> list[Shift]:
    """The conditions measured (quick mode keeps one per family)."""
    out = [
        Shift("uci_domain", "yelp→imdb", "uci_yelp", "uci_imdb"),
        Shift("uci_domain", "amazon→yelp", "uci_amazon", "uci_yelp"),
        Shift("blitzer_domain", "books→electronics", "blitzer_books", "blitzer_electronics"),
        Shift("blitzer_domain", "dvd→kitchen", "blitzer_dvd", "blitzer_kitchen"),
        Shift("sst2_cross", "sst2→yelp", "sst2", "uci_yelp"),
        Shift("sst2_cross", "sst2→dvd reviews", "sst2", "blitzer_dvd"),
        Shift("demo_topic", "airline→other topics", "demo_airline", "demo_other"),
    ]
    for frac in (0.05, 0.10, 0.20):
        out.append(
            Shift(
                "mixture", f"airline→other {round(frac * 100)}%", "demo_airline", "demo_other", frac
            )
        )
    out.append(
        Shift("mixture", "books→electronics 20%", "blitzer_books", "blitzer_electronics", 0.20)
    )
    for delta in (0.10, 0.20):
        pts = f"+{round(delta * 100)} pts negative"
        out += [
            Shift("prior", f"sst2 {pts}", "sst2", prior_delta=delta),
            Shift("prior", f"airline {pts}", "demo_airline", prior_delta=delta),
        ]
    for src in ("uci_yelp", "uci_amazon", "blitzer_books", "blitzer_dvd", "sst2", "demo_airline"):
        out.append(Shift("control", f"{src} halves", src))
    if quick:
        keep = {
            "yelp→imdb",
            "books→electronics",
            "sst2→yelp",
            "airline→other topics",
            "airline→other 10%",
            "airline +20 pts negative",
            "blitzer_books halves",
            "sst2 halves",
            "uci_yelp halves",
        }
        out = [s for s in out if s.name in keep]
    return out


def _group(source: str) -> str:
    return source.split("_")[0]


# --- per-source preparation -------------------------------------------------------------------


@dataclass
class Source:
    """A reference domain: the head split, the pool windows draw from, the fitted head."""

    domain: Domain
    head_idx: np.ndarray
    pool_idx: np.ndarray
    m_ref: int
    head: Any  # sklearn LogisticRegression
    head_accuracy_pool: float

    def probs(self, dom: Domain) -> np.ndarray:
        cache = self.__dict__.setdefault("_probs", {})
        if dom.name not in cache:
            cache[dom.name] = self.head.predict_proba(dom.embeddings).astype(np.float64)
        return cache[dom.name]


def prepare_source(dom: Domain, seed: int) -> Source:
    """Split a source domain (stratified) into head rows and the window pool; fit the head."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(dom))
    group = _group(dom.name)
    head_idx, pool_idx = train_test_split(
        idx, train_size=HEAD_ROWS[group], stratify=dom.labels, random_state=seed
    )
    head = LogisticRegression(max_iter=2000, C=1.0)
    head.fit(dom.embeddings[head_idx], dom.labels[head_idx])
    acc = float((head.predict(dom.embeddings[pool_idx]) == dom.labels[pool_idx]).mean())
    return Source(dom, np.sort(head_idx), np.sort(pool_idx), REFERENCE_ROWS[group], head, acc)


# --- windows ------------------------------------------------------------------------------------


def max_n(shift: Shift, src: Source, domains: dict[str, Domain]) -> int:
    """Largest current window this condition can draw without replacement."""
    rest = len(src.pool_idx) - src.m_ref
    if shift.kind == "control":
        return rest
    if shift.kind == "domain":
        return len(domains[shift.target])  # type: ignore[index]
    if shift.kind == "mixture":
        return min(
            int(rest / (1 - shift.fraction)), int(len(domains[shift.target]) / shift.fraction)
        )  # type: ignore[index]
    # prior: the raised class must be available in the rest of the pool (with some slack)
    labels = src.domain.labels[src.pool_idx]
    neg_share = float((labels == 0).mean())
    return int(0.9 * rest * neg_share / min(1.0, neg_share + shift.prior_delta))


def draw(
    shift: Shift,
    src: Source,
    ref: Any,
    domains: dict[str, Domain],
    n: int,
    rng: np.random.Generator,
) -> list[tuple[Domain, np.ndarray]]:
    """The current window as (domain, rows) parts; source rows never overlap the reference."""
    dom = src.domain
    rest = rng.permutation(ref.rest)
    if shift.kind == "control":
        return [(dom, rest[:n])]
    if shift.kind == "domain":
        tgt = domains[shift.target]  # type: ignore[index]
        return [(tgt, rng.choice(len(tgt), size=n, replace=False))]
    if shift.kind == "mixture":
        tgt = domains[shift.target]  # type: ignore[index]
        k = round(shift.fraction * n)
        return [(dom, rest[: n - k]), (tgt, rng.choice(len(tgt), size=k, replace=False))]
    # prior shift: negative share raised by prior_delta, other classes scaled proportionally
    labels = dom.labels[rest]
    classes = np.arange(len(dom.classes))
    share = np.array([(labels == c).mean() for c in classes])
    new = share.copy()
    new[0] = min(1.0, share[0] + shift.prior_delta)
    others = share[1:].sum()
    new[1:] = share[1:] * (1 - new[0]) / others if others > 0 else 0
    counts = np.floor(new * n).astype(int)
    counts[0] += n - counts.sum()
    parts = [rest[labels == c][: counts[c]] for c in classes]
    if sum(len(p) for p in parts) != n:
        raise ValueError(f"{shift.name}: pool too small for n={n}")
    return [(dom, np.concatenate(parts))]


# --- the methods ---------------------------------------------------------------------------------


def _driftloop(
    ref_e: np.ndarray,
    cur_e: np.ndarray,
    ref_p: np.ndarray,
    cur_p: np.ndarray,
    projection: Any = None,
) -> dict[str, Any]:
    from monitor.drift import embedding_drift, fit_projection, probability_drift
    from monitor.novelty import novelty_test
    from monitor.verdict import build_verdict

    kw = dict(alpha=ALPHA, correction="bonferroni", min_samples=MIN_SAMPLES)
    proj = projection if projection is not None else fit_projection(ref_e, PCA_COMPONENTS)
    emb = embedding_drift(ref_e, cur_e, proj, **kw)
    prob = probability_drift(ref_p, cur_p, **kw)
    nov = novelty_test(
        ref_e, cur_e, quantile=NOVELTY_QUANTILE, k=NOVELTY_K, alpha=ALPHA, min_samples=MIN_SAMPLES
    )
    verdict = build_verdict([emb, prob, nov], alpha=ALPHA)
    return {
        "dl_emb_ks": (bool(emb.alert), bool(emb.insufficient_data)),
        "dl_prob_ks": (bool(prob.alert), bool(prob.insufficient_data)),
        "dl_novelty": (bool(nov.alert), bool(nov.insufficient_data)),
        "dl_verdict": (verdict.status in ("breach", "warn"), verdict.status == "insufficient_data"),
    }


def _frame(x: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(x, columns=[f"e{i}" for i in range(x.shape[1])])


def _evidently(method: str, ref_e: np.ndarray, cur_e: np.ndarray) -> bool:
    # The decision of EmbeddingsDrift is the drift method's call on (current, reference); the
    # metric additionally runs t-SNE for its plot, which is timed in the speed section only.
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import (
        MMDDriftMethod,
        ModelDriftMethod,
    )

    if method == "ev_model":
        # EmbeddingsDriftMetric's default: model(bootstrap=reference rows < 1000)
        fn = ModelDriftMethod(bootstrap=ref_e.shape[0] < 1000)
    else:
        fn = MMDDriftMethod()
    _, detected, _ = fn(_frame(cur_e), _frame(ref_e))
    return bool(detected)


def _alibi_ks(ref_e: np.ndarray, cur_e: np.ndarray) -> bool:
    from alibi_detect.cd import KSDrift

    det = KSDrift(ref_e, p_val=ALPHA)
    return bool(det.predict(cur_e)["data"]["is_drift"])


def _alibi_mmd(ref_e: np.ndarray, cur_e: np.ndarray, n_permutations: int) -> bool:
    from alibi_detect.cd import MMDDrift

    det = MMDDrift(
        ref_e, backend="pytorch", p_val=ALPHA, n_permutations=n_permutations, device="cpu"
    )
    return bool(det.predict(cur_e)["data"]["is_drift"])


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Config:
    quick: bool
    ns: tuple[int, ...]
    reps: int  # target reps for driftloop's checks and Evidently MMD (cheap)
    heavy_reps: int  # cap for Evidently's default method and alibi KSDrift (slow per call)
    mmd_reps: int  # cap for alibi MMDDrift
    mmd_permutations: int
    mmd_max_n: int
    block: int  # reps per pass; passes interleave all cells so a spent budget leaves equal reps
    budget_s: float
    refs_per_source: int  # reference draws per source; windows cycle through them

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, (50, 200), 20, 5, 2, 50, 200, 10, 150.0, 2)
        return cls(False, (25, 50, 100, 200, 500, 1000), 100, 20, 10, 100, 500, 10, 1800.0, 10)


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass
class _Ref:
    """One reference draw of a source: rows, the rest of the pool, driftloop's projection."""

    idx: np.ndarray
    rest: np.ndarray
    projection: Any
    calibrator: Any = None


def _reference(src: Source, i: int, cache: dict[tuple[str, int], _Ref]) -> _Ref:
    key = (src.domain.name, i)
    if key not in cache:
        from monitor.drift import fit_projection

        perm = np.random.default_rng(_seed("ref", *key)).permutation(src.pool_idx)
        idx = perm[: src.m_ref]
        cache[key] = _Ref(
            idx, perm[src.m_ref :], fit_projection(src.domain.embeddings[idx], PCA_COMPONENTS)
        )
    return cache[key]


def run(
    domains: dict[str, Domain], quick: bool, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every condition; returns rows of detection rates, skipped sizes, estimate windows, timings."""
    cfg = Config.make(quick)
    conds = shifts(quick)
    sources = {
        name: prepare_source(domains[name], _seed("head", name))
        for name in {c.source for c in conds}
    }
    cells: list[tuple[Shift, int]] = []
    skipped: list[dict[str, Any]] = []
    for shift in conds:
        limit = max_n(shift, sources[shift.source], domains)
        for n in cfg.ns:
            if n > limit:
                skipped.append({"shift": shift.name, "family": shift.family, "n": n, "pool": limit})
            else:
                cells.append((shift, n))
    counts: dict[tuple[str, int], dict[str, list[int]]] = {
        (s.name, n): {m: [0, 0, 0] for m in METHODS} for s, n in cells
    }  # detected, insufficient, reps
    windows: list[dict[str, Any]] = []
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    refs: dict[tuple[str, int], _Ref] = {}
    estimate_fn = _estimate_hook()
    t_start = time.perf_counter()
    done_reps = 0
    stopped_by_budget = False
    for block_start in range(0, cfg.reps, cfg.block):
        if time.perf_counter() - t_start > cfg.budget_s:
            stopped_by_budget = True
            break
        for shift, n in cells:
            src = sources[shift.source]
            cell = counts[(shift.name, n)]
            for rep in range(block_start, min(cfg.reps, block_start + cfg.block)):
                rng = np.random.default_rng(_seed(shift.name, n, rep))
                ref = _reference(src, rep % cfg.refs_per_source, refs)
                win = draw(shift, src, ref, domains, n, rng)
                ref_e = src.domain.embeddings[ref.idx]
                ref_p = src.probs(src.domain)[ref.idx]
                ref_y = src.domain.labels[ref.idx]
                cur_e = np.concatenate([d.embeddings[i] for d, i in win])
                cur_p = np.concatenate([src.probs(d)[i] for d, i in win])
                cur_y = np.concatenate([d.labels[i] for d, i in win])
                ref_e32, cur_e32 = ref_e.astype(np.float32), cur_e.astype(np.float32)
                results: dict[str, tuple[bool, bool]] = {}
                t0 = time.perf_counter()
                results.update(_driftloop(ref_e, cur_e, ref_p, cur_p, ref.projection))
                seconds["driftloop (4 checks)"] += time.perf_counter() - t0
                calls["driftloop (4 checks)"] += 1
                peer_calls: tuple[tuple[str, int, Callable[..., bool], tuple[Any, ...]], ...] = (
                    ("ev_mmd", cfg.reps, _evidently, ("ev_mmd", ref_e, cur_e)),
                    ("ev_model", cfg.heavy_reps, _evidently, ("ev_model", ref_e, cur_e)),
                    ("alibi_ks", cfg.heavy_reps, _alibi_ks, (ref_e32, cur_e32)),
                    (
                        "alibi_mmd",
                        cfg.mmd_reps if n <= cfg.mmd_max_n else 0,
                        _alibi_mmd,
                        (ref_e32, cur_e32, cfg.mmd_permutations),
                    ),
                )
                for m, cap, fn, fn_args in peer_calls:
                    if rep >= cap:
                        continue
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        results[m] = (fn(*fn_args), False)
                    seconds[m] += time.perf_counter() - t0
                    calls[m] += 1
                for m, (det, insuf) in results.items():
                    cell[m][0] += int(det)
                    cell[m][1] += int(insuf)
                    cell[m][2] += 1
                if estimate_fn is not None:
                    est = estimate_fn(ref, ref_p, ref_y, cur_p)
                    windows.append(
                        {
                            "family": shift.family,
                            "shift": shift.name,
                            "kind": shift.kind,
                            "n": n,
                            "rep": rep,
                            "realised": float((cur_p.argmax(1) == cur_y).mean()),
                            "reference_accuracy": float((ref_p.argmax(1) == ref_y).mean()),
                            "mean_confidence": float(cur_p.max(1).mean()),
                            **est,
                        }
                    )
        done_reps = min(cfg.reps, block_start + cfg.block)
        if progress:
            progress(
                f"pass done: {done_reps}/{cfg.reps} reps of {len(cells)} cells "
                f"({time.perf_counter() - t_start:.0f}s)"
            )
    rows = []
    for shift, n in cells:
        for m, (det, insuf, reps) in counts[(shift.name, n)].items():
            if reps:
                rows.append(
                    {
                        "family": shift.family,
                        "shift": shift.name,
                        "kind": shift.kind,
                        "source": shift.source,
                        "target": shift.target,
                        "n": n,
                        "m_ref": sources[shift.source].m_ref,
                        "method": m,
                        "reps": reps,
                        "detected": det,
                        "rate": det / reps,
                        "insufficient": insuf,
                    }
                )
    return {
        "config": asdict(cfg),
        "alpha": ALPHA,
        "methods": METHODS,
        "shifts": [asdict(s) | {"kind": s.kind} for s in conds],
        "sources": {
            k: {
                "head_rows": len(s.head_idx),
                "pool_rows": len(s.pool_idx),
                "m_ref": s.m_ref,
                "head_accuracy_on_pool": s.head_accuracy_pool,
            }
            for k, s in sources.items()
        },
        "rows": rows,
        "skipped": skipped,
        "windows": windows,
        "reps_done": done_reps,
        "stopped_by_budget": stopped_by_budget,
        "seconds_per_call": {m: seconds[m] / calls[m] for m in seconds if calls[m]},
        "calls": dict(calls),
        "wall_s": time.perf_counter() - t_start,
    }


def _estimate_hook() -> Callable[..., dict[str, float]] | None:
    """driftloop's label-free estimate per window, or None while monitor.estimate is absent."""
    try:
        from monitor.estimate import estimate_accuracy, fit_calibrator
    except ImportError:
        log.warning("monitor.estimate is not importable: the estimate benchmark is skipped")
        return None

    def hook(
        ref: _Ref, ref_p: np.ndarray, ref_y: np.ndarray, cur_p: np.ndarray
    ) -> dict[str, float]:
        if ref.calibrator is None:  # one calibrator per reference draw, as in production
            ref.calibrator = fit_calibrator(ref_p, ref_y)
        est = estimate_accuracy(ref.calibrator, cur_p)
        return {
            "estimate": float(est.estimate),
            "ci_low": float(est.ci_low),
            "ci_high": float(est.ci_high),
        }

    return hook


# --- speed of the drift step alone -----------------------------------------------------------------


def drift_step_speed(domains: dict[str, Domain], repeats: int = 5) -> dict[str, Any]:
    """Seconds for one drift step: 1000 reference vs 500 current rows, 384 dims, same arrays."""
    src = prepare_source(domains["blitzer_books"], _seed("head", "blitzer_books"))
    rng = np.random.default_rng(7)
    perm = rng.permutation(src.pool_idx)
    ref_e = src.domain.embeddings[perm[:1000]]
    tgt = domains["blitzer_electronics"]
    cur_idx = rng.choice(len(tgt), 500, replace=False)
    cur_e = tgt.embeddings[cur_idx]
    ref_p, cur_p = src.probs(src.domain)[perm[:1000]], src.probs(tgt)[cur_idx]
    ref32, cur32 = ref_e.astype(np.float32), cur_e.astype(np.float32)

    def evidently_report() -> None:
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import EmbeddingsDrift

        cols = [f"e{i}" for i in range(ref_e.shape[1])]
        dd = DataDefinition(numerical_columns=cols, embeddings={"emb": cols})
        cur = Dataset.from_pandas(pd.DataFrame(cur_e, columns=cols), data_definition=dd)
        ref = Dataset.from_pandas(pd.DataFrame(ref_e, columns=cols), data_definition=dd)
        Report([EmbeddingsDrift(embeddings_name="emb")]).run(cur, ref)

    cases: dict[str, Callable[[], Any]] = {
        "driftloop (KS on PCA-20 + KS on probs + novelty + verdict)": lambda: _driftloop(
            ref_e, cur_e, ref_p, cur_p
        ),
        "Evidently EmbeddingsDrift Report (default method, includes its t-SNE plot)": evidently_report,
        "Evidently default drift method alone (domain classifier)": lambda: _evidently(
            "ev_model", ref_e, cur_e
        ),
        "Evidently MMD drift method alone": lambda: _evidently("ev_mmd", ref_e, cur_e),
        "alibi-detect KSDrift (384 features)": lambda: _alibi_ks(ref32, cur32),
        "alibi-detect MMDDrift (PyTorch, 100 permutations)": lambda: _alibi_mmd(ref32, cur32, 100),
    }
    out: dict[str, Any] = {}
    for name, fn in cases.items():
        times = []
        reps = 2 if "Report" in name else repeats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()  # warm-up (imports, first allocation)
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        out[name] = {
            "median_s": float(np.median(times)),
            "min_s": float(np.min(times)),
            "repeats": reps,
        }
    return out


# --- rendering -------------------------------------------------------------------------------------

FAILING_LOUDLY = {200: 0.51, 1000: 0.70}
FAMILY_TITLES = {
    "uci_domain": "UCI domain shifts (yelp / imdb / amazon)",
    "blitzer_domain": "Blitzer domain shifts (books / dvd / electronics / kitchen)",
    "sst2_cross": "SST-2 to other domains",
    "demo_topic": "Demo corpus: airline to other topics",
    "mixture": "Subtle: 5 / 10 / 20 % of the window from the new domain",
    "prior": "Class-prior shift inside one domain (negative share raised)",
    "control": "No-shift controls (random halves of one domain): false alarms",
}
SHORT = {
    "dl_emb_ks": "dl KS-PCA",
    "dl_prob_ks": "dl KS-probs",
    "dl_novelty": "dl novelty",
    "dl_verdict": "dl verdict",
    "ev_model": "Evidently default",
    "ev_mmd": "Evidently MMD",
    "alibi_ks": "alibi KS",
    "alibi_mmd": "alibi MMD",
}


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def family_rate(
    rows: list[dict[str, Any]], family: str, method: str, n: int
) -> tuple[float | None, int, int]:
    """Mean detection rate over a family's shifts at n; (rate, shifts, total reps)."""
    sel = [r for r in rows if r["family"] == family and r["method"] == method and r["n"] == n]
    if not sel:
        return None, 0, 0
    return float(np.mean([r["rate"] for r in sel])), len(sel), sum(r["reps"] for r in sel)


def calibration(rows: list[dict[str, Any]], alpha: float) -> dict[str, dict[str, Any]]:
    """Pooled false-alarm rate of each method over all controls, and whether it exceeds alpha."""
    from scipy.stats import binomtest

    out = {}
    for m in METHODS:
        sel = [r for r in rows if r["kind"] == "control" and r["method"] == m]
        k, n = sum(r["detected"] for r in sel), sum(r["reps"] for r in sel)
        if not n:
            continue
        p = binomtest(k, n, alpha, alternative="greater").pvalue
        out[m] = {
            "false_alarms": k,
            "windows": n,
            "rate": k / n,
            "p_above_alpha": p,
            "exceeds_alpha": bool(p < 0.01),
        }
    return out


def render_markdown(res: dict[str, Any], header: str) -> str:
    rows, alpha, cfg = res["rows"], res["alpha"], res["config"]
    methods = list(METHODS)
    calib = calibration(rows, alpha)
    families = [f for f in FAMILY_TITLES if any(r["family"] == f for r in rows)]
    lines = [header, "# Drift detection: power and false alarms, driftloop vs peers", ""]
    lines += [
        f"Detection = the method's own decision at alpha = {alpha} (driftloop, alibi-detect) or at its"
        " default threshold (Evidently: ROC AUC > 0.55, or a bootstrap of random AUCs when the reference"
        " has < 1000 rows; MMD² > 0.015). All methods see the same reference and current windows of the"
        " same MiniLM embeddings. Class probabilities (driftloop's KS-probs check) come from a logistic"
        " regression head fitted on a separate split of the source domain: it stands in for the"
        " fine-tuned model's softmax.",
        "",
        f"Repetitions actually run: driftloop's checks and Evidently MMD {res['reps_done']} per cell "
        f"(target {cfg['reps']}); Evidently default and alibi KSDrift at most {cfg['heavy_reps']} "
        f"(they cost 10-100x more per call on this machine, see the timing table); alibi MMDDrift at most "
        f"{cfg['mmd_reps']} with {cfg['mmd_permutations']} permutations and only n <= {cfg['mmd_max_n']}."
        + (
            " **The run's time budget ended before the target repetitions.**"
            if res["stopped_by_budget"]
            else ""
        ),
        "Each rate's 95% binomial half-width is about ±0.10 at 100 reps, ±0.22 at 20, ±0.31 at 10.",
        "",
        "## Headline: mean detection rate per shift family at n = 200 and n = 1000",
        "",
        "Rows are shift families (mean over the family's shifts that have that n; `—`: no shift of the"
        " family has a pool that large). The control row is the false-alarm rate.",
        "",
    ]
    for n in (200, 1000):
        lines += [
            f"### n = {n}",
            "",
            "| family | " + " | ".join(SHORT[m] for m in methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for fam in families:
            vals = [family_rate(rows, fam, m, n)[0] for m in methods]
            lines.append(f"| {fam} | " + " | ".join(_fmt(v) for v in vals) + " |")
        ref_row = ["" for _ in methods]
        ref_row[methods.index("dl_prob_ks")] = f"{FAILING_LOUDLY[n]:.2f}"
        lines.append(
            "| *published, other data: Failing Loudly BBSDs + KS (Bonferroni), images* | "
            + " | ".join(ref_row)
            + " |"
        )
        lines.append("")
    lines += [
        "The published Failing Loudly figures (0.51 at n = 200, 0.70 at n = 1000; as quoted in the issue,"
        " not re-derived here) are the mean detection accuracy of black-box shift detection (KS on a"
        " classifier's softmax, Bonferroni) over their image-data shifts; they sit beside driftloop's"
        " closest analogue, `dl KS-probs`, for scale only: different data, shifts and models.",
        "",
        "## False alarms on the no-shift controls (pooled over all controls and n)",
        "",
        "| method | false alarms / windows | rate | above alpha? |",
        "|---|---|---|---|",
    ]
    for m, c in calib.items():
        flag = f"**yes** (binomial p = {c['p_above_alpha']:.1g})" if c["exceeds_alpha"] else "no"
        lines.append(
            f"| {METHODS[m]} | {c['false_alarms']} / {c['windows']} | {c['rate']:.3f} | {flag} |"
        )
    lines += ["", "## Where driftloop is behind a peer", ""]
    lines += _behind(rows, calib, families)
    lines += ["", "## Every cell", ""]
    for fam in families:
        lines += [
            f"### {FAMILY_TITLES[fam]}",
            "",
            f"![{fam}](detection_{fam}.png)",
            "",
            "| shift | n | ref rows | reps (dl) | " + " | ".join(SHORT[m] for m in methods) + " |",
            "|---|---|---|---|" + "---|" * len(methods),
        ]
        shifts_in = list(dict.fromkeys(r["shift"] for r in rows if r["family"] == fam))
        for s in shifts_in:
            for n in sorted({r["n"] for r in rows if r["shift"] == s}):
                cell = {r["method"]: r for r in rows if r["shift"] == s and r["n"] == n}
                vals = []
                for m in methods:
                    r = cell.get(m)
                    if r is None:
                        vals.append("—")
                    elif r["insufficient"] == r["reps"]:
                        vals.append("insufficient")
                    else:
                        vals.append(
                            f"{r['rate']:.2f}"
                            + (f" ({r['reps']})" if r["reps"] != cell["dl_verdict"]["reps"] else "")
                        )
                lines.append(
                    f"| {s} | {n} | {cell['dl_verdict']['m_ref']} | {cell['dl_verdict']['reps']} | "
                    + " | ".join(vals)
                    + " |"
                )
        lines.append("")
    lines += [
        "Numbers in parentheses: repetitions for that method where fewer than driftloop's. `insufficient`:"
        f" driftloop refuses to decide below min_samples = {MIN_SAMPLES} rows (counted as not detected"
        " in the family means).",
        "",
        "## Sizes skipped (pool too small to draw the window without replacement)",
        "",
    ]
    if res["skipped"]:
        lines += ["| shift | n | largest possible |", "|---|---|---|"]
        lines += [f"| {s['shift']} | {s['n']} | {s['pool']} |" for s in res["skipped"]]
    else:
        lines.append("None.")
    lines += [
        "",
        "## Sources",
        "",
        "| source | head rows | pool rows | reference rows | head accuracy on pool |",
        "|---|---|---|---|---|",
    ]
    for k, s in res["sources"].items():
        lines.append(
            f"| {k} | {s['head_rows']} | {s['pool_rows']} | {s['m_ref']} | {s['head_accuracy_on_pool']:.3f} |"
        )
    lines += [
        "",
        "## Mean seconds per call in this run (all cells, this machine, BLAS single-threaded)",
        "",
        "| method | calls | mean s |",
        "|---|---|---|",
    ]
    for m, s in sorted(res["seconds_per_call"].items(), key=lambda kv: kv[1]):
        lines.append(f"| {m} | {res['calls'][m]} | {s:.3f} |")
    lines += ["", f"Detection section wall time: {res['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def _behind(
    rows: list[dict[str, Any]], calib: dict[str, dict[str, Any]], families: list[str]
) -> list[str]:
    out = [
        "driftloop's decision is its verdict (`dl verdict`). For each family and n = 200 / 1000, every peer"
        " whose family mean beats it by more than 0.05 is listed. A peer whose false-alarm rate on the"
        " controls is significantly above alpha is marked: part of its 'power' is its looser threshold.",
        "",
    ]
    any_behind = False
    for fam in families:
        if fam == "control":
            continue
        for n in (25, 50, 100, 200, 500, 1000):
            dl = family_rate(rows, fam, "dl_verdict", n)[0]
            if dl is None:
                continue
            for m in PEERS:
                peer = family_rate(rows, fam, m, n)[0]
                if peer is not None and peer > dl + 0.05:
                    any_behind = True
                    note = (
                        " (peer's false alarms exceed alpha)"
                        if calib.get(m, {}).get("exceeds_alpha")
                        else ""
                    )
                    out.append(
                        f"- **{fam}, n = {n}: driftloop is behind {SHORT[m]}**: {dl:.2f} vs {peer:.2f}{note}."
                    )
    if not any_behind:
        out.append(
            "- At no family and size does a peer beat driftloop's verdict by more than 0.05."
        )
    return out


def plot(res: dict[str, Any], outdir: Any) -> list[str]:
    """One PNG per family: a panel per shift, detection rate vs n per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, files = res["rows"], []
    styles = {m: ("-" if m.startswith("dl") else "--") for m in METHODS}
    for fam in FAMILY_TITLES:
        shifts_in = list(dict.fromkeys(r["shift"] for r in rows if r["family"] == fam))
        if not shifts_in:
            continue
        cols = min(3, len(shifts_in))
        nrows = int(np.ceil(len(shifts_in) / cols))
        fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
        for ax, s in zip(axes.flat, shifts_in, strict=False):
            for m in METHODS:
                pts = sorted(
                    (r["n"], r["rate"]) for r in rows if r["shift"] == s and r["method"] == m
                )
                if pts:
                    ax.plot(*zip(*pts, strict=False), styles[m], marker="o", ms=3, label=SHORT[m])
            if fam == "control":
                ax.axhline(res["alpha"], color="k", lw=0.8, ls=":", label="alpha")
                ax.set_ylabel("false-alarm rate")
            else:
                ax.set_ylabel("detection rate")
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("current window n")
            ax.set_title(s, fontsize=10)
        for ax in list(axes.flat)[len(shifts_in) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="best")
        fig.suptitle(FAMILY_TITLES[fam], fontsize=11)
        fig.tight_layout()
        name = f"detection_{fam}.png"
        fig.savefig(outdir / name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def render_speed(speed: dict[str, Any], header: str) -> str:
    base = next(v["median_s"] for k, v in speed.items() if k.startswith("driftloop"))
    lines = [
        header,
        "# The drift step alone: driftloop vs Evidently vs alibi-detect",
        "",
        "Same arrays for every tool: 1000 reference rows (Blitzer books) vs 500 current rows"
        " (Blitzer electronics), 384-dim MiniLM embeddings (+ 2-column class probabilities for"
        " driftloop). Median of the repeats after one warm-up call. BLAS single-threaded.",
        "",
        "| step | median s | min s | repeats | ratio to driftloop |",
        "|---|---|---|---|---|",
    ]
    for k, v in speed.items():
        lines.append(
            f"| {k} | {v['median_s']:.3f} | {v['min_s']:.3f} | {v['repeats']} | {v['median_s'] / base:.1f}x |"
        )
    lines.append("")
    return "\n".join(lines)
