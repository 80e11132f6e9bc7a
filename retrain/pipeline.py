"""One approved retrain: assemble -> fine-tune from the champion -> register -> gate -> promote.

Data: the labelled production rows of the retrain window (labels that had arrived by
``as_of``) plus a replay sample of what the champion was trained on. Before anything is
trained, :data:`REFERENCE_HOLDOUT_FRACTION` of the window's distinct texts is held out (by a
seeded hash of the text, so retweets stay on one side): those rows are never trained on; the
challenger's probabilities of them become its *drift reference* (``reference.parquet``), the
accepted new traffic mix the monitor compares later windows with. The reference therefore
moves only when this version is promoted. With fewer than :data:`MIN_REFERENCE_ROWS` held-out
rows (or ``drift.min_samples``, whichever is larger) nothing is held out and the champion's
reference is carried forward, with a warning. The frozen regression set
(``regression.parquet``, the gate's forgetting check) is carried unchanged.

Failure semantics: a refused input or a crash in training registers nothing; a refused gate
registers the challenger (alias ``challenger``, tag ``gate_passed=false``) and leaves
``champion`` where it was; a failed alias move raises :class:`PromotionError` with the old
champion still in place.
"""

from __future__ import annotations

import hashlib
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
from retrain.bootstrap import load_reference, load_regression, load_replay, log_reference_artifacts
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

#: Share of the window's distinct labelled texts held out as the next drift reference.
REFERENCE_HOLDOUT_FRACTION = 0.25
#: Fewer held-out rows than this keep the champion's drift reference.
MIN_REFERENCE_ROWS = 100


class LabelledSource(Protocol):
    """The part of ``monitor.store.PredictionStore`` a retrain reads."""

    def labelled(
        self,
        start: datetime,
        end: datetime,
        *,
        model_version: str | None = None,
        as_of: datetime | None = None,
    ) -> pd.DataFrame:
        """Labelled predictions with timestamps in [start, end), labels known at ``as_of``."""
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
    reference_rows: int = 0
    reference_rebased: bool = False


def _window_tag(window: Window | str) -> str:
    if isinstance(window, str):
        return window
    start, end = window
    return f"{start.isoformat()}/{end.isoformat()}"


def _unit_hash(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x1freference\x1f{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_reference_holdout(
    labelled: pd.DataFrame, *, fraction: float, seed: int, max_rows: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split labelled rows into (reference holdout, rows to train on) by a seeded text hash.

    A text is held out when ``hash(seed, text) < fraction``; with ``max_rows``, only the
    lowest-hash texts up to about that many rows are (the rest is trained on rather than
    wasted). Every row of one text lands on the same side, so no held-out text is ever trained
    on. Rows without a label are dropped; of repeated request ids the latest label wins.
    """
    import numpy as np

    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if len(labelled) == 0 or "text" not in labelled or "label" not in labelled:
        return labelled.iloc[:0], labelled
    frame = labelled[labelled["label"].notna()]
    if "request_id" in frame.columns:
        order = [c for c in ("label_timestamp", "timestamp") if c in frame.columns]
        frame = frame.sort_values(order, kind="stable") if order else frame
        frame = frame.drop_duplicates("request_id", keep="last")
    hashes = frame["text"].astype(str).map(lambda t: _unit_hash(t, seed)).to_numpy()
    held = hashes < fraction
    if max_rows is not None and held.sum() > max_rows:
        # Rows in hash order: texts stay whole, the cut falls between two texts.
        ordered = np.sort(hashes[held])
        held &= hashes <= ordered[max_rows - 1] if max_rows > 0 else False
    return frame[held], frame[~held]


def _reference_frame(
    rows: pd.DataFrame, labels: Sequence[str], cap: int, seed: int
) -> pd.DataFrame:
    """text, label (id), topic, airline of held-out production rows: a seeded sample of ``cap``."""
    import pandas as pd

    index = {name: i for i, name in enumerate(labels)}
    segments = rows["segments"] if "segments" in rows.columns else [None] * len(rows)
    frame = pd.DataFrame(
        {
            "text": rows["text"].astype(str).to_numpy(),
            "label": [index[v] if isinstance(v, str) else int(v) for v in rows["label"]],
            "topic": [s.get("topic") if isinstance(s, dict) else None for s in segments],
            "airline": [s.get("airline") if isinstance(s, dict) else None for s in segments],
        }
    )
    if len(frame) > cap:
        frame = frame.sample(n=cap, random_state=seed)
    return frame.reset_index(drop=True)


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
    as_of: datetime | None = None,
    progress: bool = True,
    epochs: float | None = None,
    max_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    reference_fraction: float = REFERENCE_HOLDOUT_FRACTION,
    min_reference_rows: int = MIN_REFERENCE_ROWS,
) -> RetrainOutcome:
    """Retrain the champion on labelled production data and promote it if the gate passes.

    Args:
        settings: the full settings (retrain, model, registry, bias, drift.reference_size).
        store_or_labelled_df: a prediction store (``labelled(start, end, as_of=as_of)`` is
            read for ``window``) or the labelled rows themselves.
        window: (start, end) of the labelled data, or a label for it when a frame is given.
        approver: who approved the retrain (tagged on the version and on promotion).
        reason: why (the incident, the drift verdict).
        as_of: only labels that had arrived by then are read (None: every label known now).
        progress: show a progress bar while training.
        epochs: overrides ``retrain.epochs``.
        max_steps: caps optimiser steps (tests).
        callbacks: extra ``TrainerCallback`` objects.
        reference_fraction: share of the window's texts held out as the next drift reference
            (0 keeps the champion's reference).
        min_reference_rows: fewer held-out rows than this (or ``drift.min_samples``) keep the
            champion's reference; the rows are then trained on.

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
        labelled = store_or_labelled_df.labelled(window[0], window[1], as_of=as_of)
    replay = load_replay(registry)
    regression = load_regression(registry)
    old_reference = load_reference(registry)

    # Hold out the next drift reference before anything is trained.
    held, to_train = split_reference_holdout(
        labelled,
        fraction=reference_fraction,
        seed=rt.seed,
        max_rows=settings.drift.reference_size,
    )
    needed = max(min_reference_rows, settings.drift.min_samples)
    rebase = reference_fraction > 0 and len(held) >= needed
    if reference_fraction > 0 and not rebase:
        log.warning(
            "only %d labelled rows held out for a new drift reference (need %d): the "
            "champion's reference is kept and every row is trained on",
            len(held),
            needed,
        )
        held, to_train = held.iloc[:0], labelled
    training = assemble_training_set(to_train, replay, settings=rt, labels=labels)
    new_reference = (
        _reference_frame(held, labels, settings.drift.reference_size, rt.seed) if rebase else None
    )
    champion_dir, champion = registry.download_champion()

    common_tags = {
        "window": _window_tag(window),
        "labels_as_of": as_of.isoformat() if as_of is not None else "now",
        "approver": approver,
        "reason": reason,
        "champion_before": champion.version,
        "reference": (
            f"rebased on {len(new_reference)} held-out rows of the window"
            if new_reference is not None
            else f"carried from version {champion.version}"
        ),
    }
    with (
        registry.run("retrain", tags={"driftloop.kind": "retrain", **common_tags}) as run,
        tempfile.TemporaryDirectory(prefix="driftloop-retrain-") as tmp,
    ):
        run.log_params(
            {
                **{f"rows_{k}": v for k, v in training.counts.items()},
                "rows_reference_holdout": len(new_reference) if new_reference is not None else 0,
            }
        )

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

        # Gate: both models on the new-domain holdout and the frozen regression set.
        segment = settings.bias.segment
        gate_set = GateSet(
            new_texts=list(training.holdout["text"]),
            new_labels=np.asarray(training.holdout["label"], dtype=np.int64),
            ref_texts=regression["text"].astype(str).tolist(),
            ref_labels=regression["label"].to_numpy(dtype=np.int64),
            ref_groups=regression[segment].to_numpy() if segment in regression else None,
        )
        kwargs: dict[str, Any] = {
            "max_length": settings.model.max_length,
            "batch_size": settings.model.batch_size,
            "device": settings.model.device,
        }
        before = predict_gate_set(*load_model_dir(champion_dir, labels), gate_set, **kwargs)
        challenger = load_model_dir(result.output_dir, labels)
        after = predict_gate_set(*challenger, gate_set, **kwargs)
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

        # The drift reference (held-out new rows, or the champion's carried forward) with the
        # challenger's probabilities; the regression set unchanged; the replay pool grown.
        reference = new_reference if new_reference is not None else old_reference
        reference = reference.drop(columns=["probabilities", "predicted_label"], errors="ignore")
        if new_reference is None and reference["text"].tolist() == gate_set.ref_texts:
            reference_proba = after.ref_proba
        else:
            from driftloop.models import predict_proba

            reference_proba = predict_proba(
                reference["text"].astype(str).tolist(), *challenger, **kwargs
            )
        new_rows = training.train.to_pandas()
        new_rows = new_rows[new_rows["source"] == "new"]
        cap = max(rt.max_train_rows, len(replay))
        log_reference_artifacts(
            run,
            reference,
            _grow_replay(replay, new_rows, cap, rt.seed),
            reference_proba,
            regression=regression,
            regression_probabilities=after.ref_proba,
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
        reference_rows=len(reference),
        reference_rebased=new_reference is not None,
    )
