"""Sentence embeddings from the monitored classifier's own encoder, and a content-addressed cache.

Vectors are the mean of the encoder's last hidden states over the attention mask (the pooling
all-MiniLM-L6-v2 was trained with). Texts are sorted by token length into batches so padding
is minimal, and the original order is restored. Truncation at ``max_length`` is counted and
logged, never silent.

torch and transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.errors import InputError, MonitorError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PROGRESS_MIN_TEXTS = 1_000
"""Below this many texts no progress bar is drawn."""


class EmbeddingError(MonitorError):
    """The encoder could not embed the texts, or the embedding cache is unusable."""


@dataclass(frozen=True)
class EmbeddingResult:
    """Embeddings of a list of texts, in the input order."""

    vectors: np.ndarray
    n_truncated: int
    max_length: int

    @property
    def dim(self) -> int:
        """Embedding dimensionality."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not one string")
    items = list(texts)
    if not items:
        raise InputError("texts is empty")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__}, not str")
    return items


def encoder_of(model: Any) -> Any:
    """The bare transformer encoder of a model (``base_model`` of a classifier, else itself)."""
    return getattr(model, "base_model", model)


def quantize_encoder(encoder: Any) -> Any:
    """A dynamic int8 copy of ``encoder`` (Linear layers) for CPU inference."""
    import torch

    return torch.ao.quantization.quantize_dynamic(
        encoder.cpu(), {torch.nn.Linear}, dtype=torch.qint8, inplace=False
    )


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return summed / weights.sum(dim=1).clamp(min=1e-9)


def embed_texts(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    progress: bool = True,
    quantize: bool = False,
) -> EmbeddingResult:
    """Mean-pooled encoder embeddings, float32 (len(texts), hidden), in the input order.

    Args:
        texts: The texts.
        model: A HF sequence classifier (its ``base_model`` is used) or a bare encoder.
        tokenizer: Its tokenizer.
        batch_size: Texts per forward pass.
        max_length: Tokens per text, special tokens included; longer texts are truncated
            (counted in ``n_truncated`` and logged).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. CUDA runs
            under bf16 autocast.
        progress: Draw a rich progress bar when there are at least ``PROGRESS_MIN_TEXTS`` texts.
        quantize: CPU only: run a dynamic int8 copy of the encoder (off by default; see
            ``bench/bench_monitor_speed.py`` for its speed and cosine to fp32).

    Raises:
        InputError: empty texts, non-string items, non-positive sizes.
        EmbeddingError: the forward pass failed.
    """
    import torch

    from driftloop.models import resolve_device

    items = _check_texts(texts)
    if batch_size < 1 or max_length < 2:
        raise InputError(
            f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}"
        )
    dev = resolve_device(device)
    encoder = encoder_of(model)
    if quantize:
        if dev.type != "cpu":
            raise InputError("quantize=True is a CPU path; use device='cpu'")
        encoder = quantize_encoder(encoder)
    encoder = encoder.to(dev).eval()

    # Token lengths without truncation: the sort key and the truncation count in one pass.
    lengths = np.fromiter(
        (
            len(ids)
            for ids in tokenizer(items, add_special_tokens=True, truncation=False, verbose=False)[
                "input_ids"
            ]
        ),
        dtype=np.int64,
        count=len(items),
    )
    truncated = int((lengths > max_length).sum())
    if truncated:
        log.warning(
            "%d of %d texts exceed %d tokens and are truncated (longest %d tokens)",
            truncated,
            len(items),
            max_length,
            int(lengths.max()),
        )
    order = np.argsort(-lengths, kind="stable")  # longest first: memory peaks early
    out: np.ndarray | None = None

    bar = None
    if progress and len(items) >= PROGRESS_MIN_TEXTS:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("embedding", total=len(items))
    try:
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                idx = order[start : start + batch_size]
                enc = tokenizer(
                    [items[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(dev)
                with torch.autocast(
                    device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"
                ):
                    hidden = encoder(
                        input_ids=enc["input_ids"],
                        attention_mask=enc["attention_mask"],
                        **(
                            {"token_type_ids": enc["token_type_ids"]}
                            if "token_type_ids" in enc
                            else {}
                        ),
                    ).last_hidden_state
                pooled = _mean_pool(hidden.float(), enc["attention_mask"]).cpu().numpy()
                if out is None:
                    out = np.empty((len(items), pooled.shape[1]), dtype=np.float32)
                out[idx] = pooled
                if bar is not None:
                    bar.advance(task, len(idx))
    except RuntimeError as exc:
        raise EmbeddingError(f"embedding forward pass failed: {exc}") from exc
    finally:
        if bar is not None:
            bar.stop()
    assert out is not None  # items is non-empty
    return EmbeddingResult(vectors=out, n_truncated=truncated, max_length=max_length)


def text_key(text: str) -> str:
    """sha256 hex digest of a text (UTF-8), the cache's content address."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Content-addressed embedding cache in one SQLite file under ``directory``.

    Keyed by (model version, sha256 of the text, max_length): reference embeddings are
    computed once per model version, and a text seen before is never embedded again.
    The directory is created on the first write; nothing touches disk at construction.
    """

    FILENAME = "embeddings.sqlite"
    _CHUNK = 500

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILENAME

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if not self.path.exists():
            if not create:
                return None
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " model_version TEXT NOT NULL, max_length INTEGER NOT NULL, text_sha256 TEXT NOT NULL,"
                " dim INTEGER NOT NULL, truncated INTEGER NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (model_version, max_length, text_sha256))"
            )
        except sqlite3.Error as exc:
            raise EmbeddingError(f"embedding cache {self.path} is unusable: {exc}") from exc
        return conn

    def __len__(self) -> int:
        conn = self._connect(create=False)
        if conn is None:
            return 0
        with conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        conn.close()
        return int(count)

    def _lookup(
        self, conn: sqlite3.Connection, model_version: str, max_length: int, keys: list[str]
    ) -> dict[str, tuple[np.ndarray, bool]]:
        found: dict[str, tuple[np.ndarray, bool]] = {}
        for start in range(0, len(keys), self._CHUNK):
            chunk = keys[start : start + self._CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT text_sha256, dim, truncated, vector FROM embeddings"
                f" WHERE model_version = ? AND max_length = ? AND text_sha256 IN ({marks})",
                (model_version, max_length, *chunk),
            )
            for key, dim, trunc, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size != dim:
                    raise EmbeddingError(f"corrupt cache entry {key} in {self.path}")
                found[key] = (vec, bool(trunc))
        return found

    def embed(
        self,
        texts: Sequence[str],
        model_version: str,
        model: Any,
        tokenizer: Any,
        **kwargs: Any,
    ) -> EmbeddingResult:
        """Embeddings of ``texts``; only texts not cached for this model version are embedded.

        Args:
            texts: The texts.
            model_version: Identifies the encoder weights (e.g. the registry version).
            model: Passed to :func:`embed_texts` for the missing texts.
            tokenizer: Its tokenizer.
            **kwargs: Passed to :func:`embed_texts` (``max_length`` is part of the key).

        Raises:
            InputError: empty texts or an empty model version.
            EmbeddingError: the cache file is unusable.
        """
        items = _check_texts(texts)
        if not model_version:
            raise InputError("model_version must be a non-empty string")
        max_length = int(kwargs.get("max_length", 128))
        keys = [text_key(t) for t in items]
        conn = self._connect(create=False)
        found: dict[str, tuple[np.ndarray, bool]] = {}
        if conn is not None:
            with conn:
                found = self._lookup(conn, model_version, max_length, list(dict.fromkeys(keys)))
            conn.close()

        missing: dict[str, str] = {}
        for key, text in zip(keys, items, strict=True):
            if key not in found and key not in missing:
                missing[key] = text
        log.info(
            "embedding cache: %d texts, %d cached, %d to embed",
            len(items),
            len(items) - sum(1 for k in keys if k not in found),
            len(missing),
        )
        if missing:
            new_texts = list(missing.values())
            result = embed_texts(new_texts, model, tokenizer, **kwargs)
            lengths = tokenizer(
                new_texts, add_special_tokens=True, truncation=False, verbose=False
            )["input_ids"]
            rows = []
            for key, vec, ids in zip(missing, result.vectors, lengths, strict=True):
                trunc = len(ids) > max_length
                found[key] = (vec, trunc)
                rows.append(
                    (
                        model_version,
                        max_length,
                        key,
                        vec.size,
                        int(trunc),
                        vec.astype(np.float32).tobytes(),
                    )
                )
            conn = self._connect(create=True)
            assert conn is not None
            try:
                with conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows
                    )
            except sqlite3.Error as exc:
                raise EmbeddingError(f"cannot write embedding cache {self.path}: {exc}") from exc
            finally:
                conn.close()

        dims = {found[k][0].size for k in keys}
        if len(dims) != 1:
            raise EmbeddingError(f"cached vectors of different sizes {sorted(dims)} for one model")
        vectors = np.stack([found[k][0] for k in keys]).astype(np.float32, copy=False)
        n_truncated = sum(found[k][1] for k in keys)
        return EmbeddingResult(vectors=vectors, n_truncated=n_truncated, max_length=max_length)
