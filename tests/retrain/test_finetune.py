"""Fine-tuning with the tiny model: one-batch overfit, class weights, a crash mid-training."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.settings import LABELS, RetrainSettings
from retrain.errors import TrainingFailed
from retrain.finetune import class_weights_for, finetune


def _dataset(n: int = 8):
    import datasets

    texts = [
        "great flight thanks",
        "worst delay ever",
        "my bag is at gate",
        "love the crew",
        "lost my luggage again",
        "flight at noon",
        "awesome service",
        "terrible seats",
    ][:n]
    labels = [2, 0, 1, 2, 0, 1, 2, 0][:n]
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_one_batch_overfit_loss_falls(tiny_model, tmp_path: Path, device: str) -> None:
    import torch

    from driftloop.models import load_classifier, predict_proba

    data = _dataset()
    settings = RetrainSettings(batch_size=8, seed=0, early_stopping_patience=100)
    result = finetune(
        tiny_model.path,
        data,
        data,
        settings=settings,
        output_dir=tmp_path / "out",
        learning_rate=5e-3,
        labels=LABELS,
        max_length=32,
        device=device,  # bf16 mixed precision on CUDA
        progress=False,
        max_steps=30,
    )
    assert result.steps == 30
    assert result.train_loss_last < result.train_loss_first * 0.5
    assert result.eval_accuracy >= 0.75
    assert (result.output_dir / "config.json").is_file()
    assert result.class_weights is None
    # The saved weights are plain fp32 that load and predict on the CPU, whatever trained them.
    model, tokenizer = load_classifier(result.output_dir, LABELS)
    assert next(model.parameters()).dtype == torch.float32
    proba = predict_proba(list(data["text"]), model, tokenizer, device="cpu")
    assert (proba.argmax(axis=1) == data["label"]).mean() >= 0.75


def test_class_weights_only_when_imbalanced() -> None:
    assert class_weights_for([0, 1, 2, 0, 1, 2], 3) is None
    weights = class_weights_for([0] * 8 + [1] * 2 + [2] * 2, 3)
    assert weights is not None and weights[1] > weights[0]


def test_crash_mid_training_raises_training_failed(tiny_model, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("simulated crash")

    data = _dataset()
    with pytest.raises(TrainingFailed, match="simulated crash"):
        finetune(
            tiny_model.path,
            data,
            data,
            settings=RetrainSettings(batch_size=4),
            output_dir=tmp_path / "out",
            labels=LABELS,
            max_length=32,
            device="cpu",
            progress=False,
            max_steps=5,
            callbacks=[Boom()],
        )
    assert not (tmp_path / "out" / "model").exists()


def test_progress_is_a_rich_bar_not_printed_dicts(
    tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.progress import Progress
    from transformers import TrainerCallback

    data = _dataset()
    kwargs = {
        "settings": RetrainSettings(batch_size=4, early_stopping_patience=100),
        "labels": LABELS,
        "max_length": 32,
        "device": "cpu",
        "progress": True,
    }
    finetune(tiny_model.path, data, data, output_dir=tmp_path / "a", max_steps=4, **kwargs)
    out = capsys.readouterr()
    assert "{'loss'" not in out.out + out.err and "it/s" not in out.out + out.err
    assert "fine-tuning 8 rows" in out.out and "4/4" in out.out

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise RuntimeError("crash")

    with pytest.raises(TrainingFailed):
        finetune(
            tiny_model.path,
            data,
            data,
            output_dir=tmp_path / "b",
            max_steps=4,
            callbacks=[Boom()],
            **kwargs,
        )
    with Progress():  # the crashed run's live display was stopped
        pass
