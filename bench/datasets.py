"""Benchmark data: loaders for ``../shared/data`` sets driftloop has none for, domain pools, embeddings.

Every text is embedded once with the monitored encoder (the bundled all-MiniLM-L6-v2, mean
pooling over the attention mask, ``max_length`` 128, :func:`monitor.embeddings.embed_texts`) and
cached per text under ``bench/results/cache/`` (git-ignored), so benchmark windows are index
resamples of precomputed arrays and a quick run reuses a full run's vectors.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from driftloop.data import (
    AIRLINE_TOPIC,
    DataError,
    _require_shared,
    load_uci_sentences,
    read_demo_rows,
)

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CACHE_DIR = RESULTS_DIR / "cache"
MAX_LENGTH = 128
BLITZER_DOMAINS = ("books", "dvd", "electronics", "kitchen")
UCI_DOMAINS = {"yelp": "yelp", "imdb": "imdb", "amazon": "amazon_cells"}
SEED = 20240611


# --- loaders for the shared sets driftloop.data has no loader for ------------------------------


def load_sst2(split: str) -> list[tuple[str, int]]:
    """SST-2 sentences of one split (``train``, ``dev``, ``test``): (text, 0/1)."""
    path = _require_shared(f"sst2_sentences/stsa.binary.{split}.txt")
    out: list[tuple[str, int]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if label not in ("0", "1"):
            raise DataError(f"bad SST-2 line in {path}: {line[:60]!r}")
        out.append((text.strip(), int(label)))
    return out


def load_mr() -> list[tuple[str, int]]:
    """MR (Pang & Lee) snippets: (text, 0/1). Overlaps SST-2: never split one against the other."""
    out: list[tuple[str, int]] = []
    for name, label in (("pos", 1), ("neg", 0)):
        path = _require_shared(f"movie_review_polarity/rt-polarity.{name}.txt")
        out += [
            (t.strip(), label) for t in path.read_text(encoding="utf-8").split("\n") if t.strip()
        ]
    return out


def load_blitzer(domain: str | None = None) -> list[dict[str, object]]:
    """Blitzer multi-domain reviews (``reviews.jsonl``), optionally one domain only."""
    path = _require_shared("multi_domain_sentiment/reviews.jsonl")
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()
    ]
    if domain is not None:
        if domain not in BLITZER_DOMAINS:
            raise DataError(f"unknown Blitzer domain {domain!r}")
        rows = [r for r in rows if r["domain"] == domain]
    return rows


def blitzer_text(row: dict[str, object]) -> str:
    """Title and body of a review as one text (newlines inside reviews become spaces)."""
    title = str(row.get("title") or "").strip()
    body = " ".join(str(row.get("text") or "").split())
    return f"{title}. {body}" if title else body


# --- domains ------------------------------------------------------------------------------------


@dataclass
class Domain:
    """One domain: texts, integer labels, class names, and (lazily) embeddings."""

    name: str
    texts: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    embeddings: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts)


def _subsample(items: Sequence[Any], k: int, seed: int) -> list[Any]:
    """``k`` items in their original order; nested: a smaller ``k`` keeps a subset of a larger."""
    if len(items) <= k:
        return list(items)
    idx = np.sort(np.random.default_rng(seed).permutation(len(items))[:k])
    return [items[i] for i in idx]


def _dedupe(pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    seen: set[str] = set()
    out = []
    for text, label in pairs:
        key = " ".join(text.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append((text, label))
    return out


#: Rows per domain of a full run (default: all) and of a quick run (fewer domains). The Blitzer
#: domains that are only ever shift targets need no more than the largest window (1,000).
FULL_ROWS: dict[str, int] = {
    "sst2": 3000,
    "demo_airline": 2500,
    "demo_other": 2500,
    "blitzer_electronics": 1100,
    "blitzer_kitchen": 1100,
}
QUICK_DOMAINS: dict[str, int] = {
    "uci_yelp": 1000,
    "uci_imdb": 1000,
    "sst2": 1200,
    "demo_airline": 1200,
    "demo_other": 1200,
}


def build_domains(*, quick: bool = False) -> dict[str, Domain]:
    """The benchmark domains, texts and labels only (exact duplicates dropped within a domain).

    Full: UCI yelp / imdb / amazon, the four Blitzer domains (electronics and kitchen, only ever
    shift targets, 1,100 rows each), SST-2 (3,000 sentences), demo airline tweets and demo
    other-topic tweets (2,500 each). Quick: five of them, smaller (subsets of the full ones, so
    the cache serves both).
    """
    binary = ("negative", "positive")
    pairs_of: dict[str, list[tuple[str, int]]] = {}
    classes: dict[str, tuple[str, ...]] = {}
    for short, file_domain in UCI_DOMAINS.items():
        pairs_of[f"uci_{short}"] = _dedupe(load_uci_sentences(file_domain))
    if not quick:
        reviews = load_blitzer()
        for dom in BLITZER_DOMAINS:
            pairs_of[f"blitzer_{dom}"] = _dedupe(
                [(blitzer_text(r), int(r["label"])) for r in reviews if r["domain"] == dom]
            )
    sst = _dedupe(load_sst2("train") + load_sst2("dev") + load_sst2("test"))
    pairs_of["sst2"] = _subsample(sst, 4000, SEED)

    from driftloop.settings import LABELS

    rows = read_demo_rows()
    for name, keep, seed in (("demo_airline", True, SEED + 1), ("demo_other", False, SEED + 2)):
        pairs = _dedupe(
            [
                (str(r["text"]), int(r["label"]))
                for r in rows
                if (r["topic"] == AIRLINE_TOPIC) == keep
            ]
        )
        pairs_of[name] = _subsample(pairs, 3000, seed)
        classes[name] = tuple(LABELS)
    domains: dict[str, Domain] = {}
    for name, pairs in pairs_of.items():
        if name in FULL_ROWS:
            pairs = _subsample(pairs, FULL_ROWS[name], SEED + 4)
        if quick:
            if name not in QUICK_DOMAINS:
                continue
            pairs = _subsample(pairs, QUICK_DOMAINS[name], SEED + 3)
        domains[name] = Domain(
            name,
            [t for t, _ in pairs],
            np.array([y for _, y in pairs]),
            classes.get(name, binary),
        )
    return domains


# --- embeddings ---------------------------------------------------------------------------------

#: Version key of the benchmark's embedding cache: the base encoder, mean pooling, max_length.
CACHE_VERSION = f"all-MiniLM-L6-v2|mean|{MAX_LENGTH}"

_MODEL: tuple[Any, Any] | None = None


def _model() -> tuple[Any, Any]:
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from driftloop.models import load_classifier

        _MODEL = load_classifier()
    return _MODEL


def embedder_name() -> str:
    """The code path that embeds the benchmark texts."""
    return "monitor.embeddings.embed_texts (all-MiniLM-L6-v2 encoder, mean pooling)"


def embed(texts: list[str], *, batch_size: int = 64) -> tuple[np.ndarray, float | None]:
    """Embeddings of ``texts`` through the per-text cache; (vectors, seconds if any were new).

    The cache (:class:`monitor.embeddings.EmbeddingCache` under ``bench/results/cache/``) is
    content-addressed per text, so a quick run's subsets and a full run share it.
    """
    from monitor.embeddings import EmbeddingCache

    cache = EmbeddingCache(CACHE_DIR / "embeddings")
    before = len(cache)
    model, tokenizer = _model()
    t0 = time.perf_counter()
    vecs = cache.embed(
        texts,
        CACHE_VERSION,
        model,
        tokenizer,
        batch_size=batch_size,
        max_length=MAX_LENGTH,
        device="cpu",
        progress=True,
    ).vectors
    seconds = time.perf_counter() - t0
    return np.asarray(vecs, dtype=np.float32), (seconds if len(cache) > before else None)


def embed_domains(domains: dict[str, Domain]) -> dict[str, float]:
    """Fill ``Domain.embeddings``; returns seconds spent per domain that needed new embeddings."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    spent: dict[str, float] = {}
    for name, dom in domains.items():
        vecs, seconds = embed(dom.texts)
        dom.embeddings = vecs.astype(np.float64)
        if seconds is not None:
            spent[name] = seconds
            log.info("embedded %s: %d texts in %.1fs", name, len(dom), seconds)
    return spent
