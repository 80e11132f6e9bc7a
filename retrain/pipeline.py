"""One approved retrain: assemble -> fine-tune from the champion -> register -> gate -> promote.

Failure semantics: a refused input or a crash in training registers nothing; a refused gate
registers the challenger (alias ``challenger``, tag ``gate_passed=false``) and leaves
``champion`` where it was; a failed alias move raises :class:`PromotionError` with the old
champion still in place.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from driftloop.settings import Settings
from retrain.bootstrap import load_reference, load_replay, log_reference_artifacts
from retrain.continual import ContinualReport, continual_report
from retrain.data import assemble_training_set
from retrain.errors import NoChampionError
from retrain.finetune import FinetuneResult, finetune
from retrain.gate import GateResult, GateSet, evaluate_gate, predict_gate_set
from retrain.registry import Registry, load_model_dir

if TYPE_CHECKING:
    import pandas as pd
    from transformers import TrainerCallback

log = logging.getLogger(__name__)

Window = tuple[datetime, datetime]


class LabelledSource(Protocol):
    """The part of ``monitor.store.PredictionStore`` a retrain reads."""

    def labelled(
        self, start: datetime, end: datetime, *, model_version: str | None = None
    ) -> pd.DataFrame:
        """Labelled predictions with timestamps in [start, end)."""
        ...


@dataclass(frozen=True)
class RetrainOutcome:
    """Every number of one retrain and what happened to the registry."""

    version: str
    promoted: bool
    champion_before: str
    champion_after: str
    counts: dict[str, int]
    finetune: FinetuneResult
    gate: GateResult
    continual: ContinualReport
    run_id: str
    seconds: float
    reasons: tuple[str, ...] = field(default=())


def _window_tag(window: Window | str) -> str:
    if isinstance(window, str):
        return window
    start, end = window
    return f"{start.isoformat()}/{end.isoformat()}"


def _grow_replay(old: pd.DataFrame, new_train: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """The next replay pool: the old one plus the new training rows, capped (seeded sample)."""
    import pandas as pd

    cols = ["text", "label", "topic", "airline"]
    pool = pd.concat(
        [old.reindex(columns=cols), new_train.reindex(columns=cols)], ignore_index=True
    )
    pool = pool.drop_duplicates("text", keep="last")
    if len(pool) > cap:
        pool = pool.sample(n=cap, random_state=seed).reset_index(drop=True)
    return pool


def retrain(
    settings: Settings,
    store_or_labelled_df: LabelledSource | pd.DataFrame,
    *,
    window: Window | str,
    approver: str,
    reason: str,
    progress: bool = True,
    epochs: float | None = None,
    max_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> RetrainOutcome:
    """Retrain the champion on labelled production data and promote it if the gate passes.

    Args:
        settings: the full settings (retrain, model, registry, bias).
        store_or_labelled_df: a prediction store (``labelled(start, end)`` is read for
            ``window``) or the labelled rows themselves.
        window: (start, end) of the labelled data, or a label for it when a frame is given.
        approver: who approved the retrain (tagged on the version and on promotion).
        reason: why (the incident, the drift verdict).
        progress: show the Trainer's progress bar.
        epochs: overrides ``retrain.epochs``.
        max_steps: caps optimiser steps (tests).
        callbacks: extra ``TrainerCallback`` objects.

    Raises:
        NoChampionError: nothing to retrain from.
        TrainingDataError: the labelled rows cannot make a training set (nothing trained).
        TrainingFailed: training crashed (nothing registered, champion unchanged).
        ModelArtifactError: the champion's or challenger's artifact is broken.
        PromotionError: the alias move failed (champion unchanged).
        RegistryUnavailable: MLflow does not answer.
    """
    import pandas as pd

    started = time.perf_counter()
    rt, labels = settings.retrain, settings.model.labels
    registry = Registry(settings.registry)
    champion = registry.champion()
    if champion is None:
        raise NoChampionError("no champion to retrain from: run the bootstrap first")

    # Data: labelled production rows + replay of what the champion was trained on.
    if isinstance(store_or_labelled_df, pd.DataFrame):
        labelled = store_or_labelled_df
    else:
        if isinstance(window, str):
            raise TypeError("reading from a store needs window=(start, end)")
        labelled = store_or_labelled_df.labelled(window[0], window[1])
    replay = load_replay(registry)
    reference = load_reference(registry)
    training = assemble_training_set(labelled, replay, settings=rt, labels=labels)
    champion_dir, champion = registry.download_champion()

    common_tags = {
        "window": _window_tag(window),
        "approver": approver,
        "reason": reason,
        "champion_before": champion.version,
    }
    with (
        registry.run("retrain", tags={"driftloop.kind": "retrain", **common_tags}) as run,
        tempfile.TemporaryDirectory(prefix="driftloop-retrain-") as tmp,
    ):
        run.log_params({f"rows_{k}": v for k, v in training.counts.items()})

        # Fine-tune from the champion, logged as a nested child run.
        with registry.run("finetune", parent=run) as child:
            result = finetune(
                champion_dir,
                training.train,
                training.holdout,
                settings=rt,
                output_dir=Path(tmp),
                learning_rate=rt.learning_rate,
                labels=labels,
                max_length=settings.model.max_length,
                device=settings.model.device,
                mlflow_run=child,
                progress=progress,
                epochs=epochs,
                max_steps=max_steps,
                callbacks=callbacks,
            )

        # Gate: both models on the new-domain holdout and the frozen reference set.
        segment = settings.bias.segment
        gate_set = GateSet(
            new_texts=list(training.holdout["text"]),
            new_labels=np.asarray(training.holdout["label"], dtype=np.int64),
            ref_texts=reference["text"].astype(str).tolist(),
            ref_labels=reference["label"].to_numpy(dtype=np.int64),
            ref_groups=reference[segment].to_numpy() if segment in reference else None,
        )
        kwargs: dict[str, Any] = {
            "max_length": settings.model.max_length,
            "batch_size": settings.model.batch_size,
            "device": settings.model.device,
        }
        before = predict_gate_set(*load_model_dir(champion_dir, labels), gate_set, **kwargs)
        after = predict_gate_set(*load_model_dir(result.output_dir, labels), gate_set, **kwargs)
        gate = evaluate_gate(
            y_new=gate_set.new_labels,
            champion_new=before.new_proba,
            challenger_new=after.new_proba,
            y_ref=gate_set.ref_labels,
            champion_ref=before.ref_proba,
            challenger_ref=after.ref_proba,
            groups=gate_set.ref_groups,
            settings=rt,
            bias=settings.bias,
            labels=labels,
            mlflow_run=run,
        )
        continual = continual_report(
            y_old=gate_set.ref_labels,
            old_before=before.ref_proba,
            old_after=after.ref_proba,
            y_new=gate_set.new_labels,
            new_before=before.new_proba,
            new_after=after.new_proba,
        )
        run.log_metrics(continual.metrics())

        # Carry the reference forward (with the challenger's probabilities) and grow the replay.
        new_rows = training.train.to_pandas()
        new_rows = new_rows[new_rows["source"] == "new"]
        cap = max(rt.max_train_rows, len(replay))
        log_reference_artifacts(
            run,
            reference.drop(columns=["probabilities"], errors="ignore"),
            _grow_replay(replay, new_rows, cap, rt.seed),
            after.ref_proba,
        )

        # Register as challenger; promote only when the gate passed.
        version = registry.register(
            run,
            result.output_dir,
            tags={
                **common_tags,
                "kind": "retrain",
                "data_counts": training.counts,
                "gate_passed": gate.passed,
                "gate_reasons": list(gate.reasons),
                **{
                    k.removeprefix("gate_"): v for k, v in gate.metrics().items() if "accuracy" in k
                },
                "gain": gate.gain,
                "forgetting": gate.forgetting,
            },
        )
        run.set_tags({"version": version.version})
        promoted = False
        if gate.passed:
            registry.promote(version.version, approver=approver, reason=reason, labels=labels)
            promoted = True
        else:
            log.warning("gate refused version %s: %s", version.version, "; ".join(gate.reasons))
        run.set_tags({"promoted": promoted})

    after_champion = registry.champion()
    return RetrainOutcome(
        version=version.version,
        promoted=promoted,
        champion_before=champion.version,
        champion_after=after_champion.version if after_champion else "",
        counts=training.counts,
        finetune=result,
        gate=gate,
        continual=continual,
        run_id=run.run_id,
        seconds=time.perf_counter() - started,
        reasons=gate.reasons,
    )
