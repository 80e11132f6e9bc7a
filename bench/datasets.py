"""Benchmark data: loaders for ``../shared/data`` sets driftloop has none for, domain pools, embeddings.

Every text is embedded once with the monitored encoder (all-MiniLM-L6-v2, mean pooling over the
attention mask, ``max_length`` 128: :func:`monitor.embeddings.embed_texts` when importable, an
identical fallback otherwise) and cached as ``.npy`` under ``bench/results/cache/`` keyed by a
hash of the texts, so benchmark windows are index resamples of precomputed arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


def _subsample(items: Sequence, k: int, seed: int) -> list:
    if len(items) <= k:
        return list(items)
    idx = np.sort(np.random.default_rng(seed).choice(len(items), size=k, replace=False))
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


def build_domains(*, demo_per_side: int = 4000, sst2_rows: int = 4000) -> dict[str, Domain]:
    """All benchmark domains, texts and labels only (exact duplicates dropped within a domain)."""
    binary = ("negative", "positive")
    domains: dict[str, Domain] = {}
    for short, file_domain in UCI_DOMAINS.items():
        pairs = _dedupe(load_uci_sentences(file_domain))
        domains[f"uci_{short}"] = Domain(
            f"uci_{short}", [t for t, _ in pairs], np.array([y for _, y in pairs]), binary
        )
    reviews = load_blitzer()
    for dom in BLITZER_DOMAINS:
        pairs = _dedupe([(blitzer_text(r), int(r["label"])) for r in reviews if r["domain"] == dom])
        domains[f"blitzer_{dom}"] = Domain(
            f"blitzer_{dom}", [t for t, _ in pairs], np.array([y for _, y in pairs]), binary
        )
    sst = _dedupe(load_sst2("train") + load_sst2("dev") + load_sst2("test"))
    sst = _subsample(sst, sst2_rows, SEED)
    domains["sst2"] = Domain("sst2", [t for t, _ in sst], np.array([y for _, y in sst]), binary)

    from driftloop.settings import LABELS

    rows = read_demo_rows()
    airline = _dedupe(
        [(str(r["text"]), int(r["label"])) for r in rows if r["topic"] == AIRLINE_TOPIC]
    )
    other = _dedupe(
        [(str(r["text"]), int(r["label"])) for r in rows if r["topic"] != AIRLINE_TOPIC]
    )
    airline = _subsample(airline, demo_per_side, SEED + 1)
    other = _subsample(other, demo_per_side, SEED + 2)
    domains["demo_airline"] = Domain(
        "demo_airline", [t for t, _ in airline], np.array([y for _, y in airline]), tuple(LABELS)
    )
    domains["demo_other"] = Domain(
        "demo_other", [t for t, _ in other], np.array([y for _, y in other]), tuple(LABELS)
    )
    return domains


# --- embeddings ---------------------------------------------------------------------------------


def _cache_key(texts: Sequence[str]) -> str:
    h = hashlib.sha256(f"all-MiniLM-L6-v2|mean|{MAX_LENGTH}|".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


_MODEL: tuple[object, object] | None = None


def _model() -> tuple[object, object]:
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from driftloop.models import load_classifier

        _MODEL = load_classifier()
    return _MODEL


def _embed_fallback(
    texts: list[str], model: object, tokenizer: object, batch_size: int
) -> np.ndarray:
    """Same computation as monitor.embeddings.embed_texts (mean pooling over the mask)."""
    import torch

    encoder = getattr(model, "base_model", model).eval()
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            hidden = encoder(**enc).last_hidden_state
            w = enc["attention_mask"].unsqueeze(-1).float()
            out[idx] = ((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)).numpy()
    return out


def embedder_name() -> str:
    """Which code path embeds: driftloop's embed_texts or the identical fallback."""
    try:
        from monitor.embeddings import embed_texts  # noqa: F401
    except ImportError:
        return "bench fallback (mean pooling, identical to monitor.embeddings.embed_texts)"
    return "monitor.embeddings.embed_texts"


def embed(texts: list[str], *, batch_size: int = 64) -> tuple[np.ndarray, float | None]:
    """Embeddings of ``texts`` (cached); returns (vectors, seconds spent embedding or None if cached)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"emb_{_cache_key(texts)}.npy"
    if path.is_file():
        vecs = np.load(path)
        if vecs.shape[0] == len(texts):
            return vecs, None
    model, tokenizer = _model()
    t0 = time.perf_counter()
    try:
        from monitor.embeddings import embed_texts
    except ImportError:
        vecs = _embed_fallback(texts, model, tokenizer, batch_size)
    else:
        vecs = embed_texts(
            texts,
            model,
            tokenizer,
            batch_size=batch_size,
            max_length=MAX_LENGTH,
            device="cpu",
            progress=False,
        ).vectors
    seconds = time.perf_counter() - t0
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs.astype(np.float32))
    tmp.replace(path)
    return vecs, seconds


def embed_domains(domains: dict[str, Domain]) -> dict[str, float]:
    """Fill ``Domain.embeddings`` for every domain; returns seconds spent per newly embedded domain."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    spent: dict[str, float] = {}
    for name, dom in domains.items():
        vecs, seconds = embed(dom.texts)
        dom.embeddings = vecs.astype(np.float64)
        if seconds is not None:
            spent[name] = seconds
            log.info("embedded %s: %d texts in %.1fs", name, len(dom), seconds)
    return spent
