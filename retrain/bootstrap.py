"""The first champion: fine-tune the base model on the reference domain and register it.

The reference domain is the airline rows of the simulator's reference split. Of those, a frozen
regression set (up to ``drift.reference_size`` rows) is held out. Every registered version's run
carries three artifacts:

* ``reference/reference.parquet``: the *drift reference*, the traffic the monitor compares the
  version's production windows with, with the version's own probabilities. For the bootstrap
  it is the regression set; a promoted retrain replaces it with held-out rows of the accepted
  new traffic (see :mod:`retrain.pipeline`).
* ``reference/regression.parquet``: the frozen regression set, carried unchanged from version to
  version (the gate's forgetting check), with the version's own probabilities of it (the
  monitor's bias baseline: the gaps the version had when it was accepted). Versions logged
  before this artifact existed fall back to ``reference.parquet``.
* ``reference/replay.parquet``: the training rows (the replay pool of later retrains).
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftloop.data import AIRLINE_TOPIC
from driftloop.settings import Settings
from retrain.errors import ModelArtifactError, RetrainError, TrainingDataError
from retrain.finetune import FinetuneResult, finetune
from retrain.registry import Registry, TrackedRun, VersionInfo

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference/reference.parquet"
REGRESSION_ARTIFACT = "reference/regression.parquet"
REPLAY_ARTIFACT = "reference/replay.parquet"
#: Columns of the regression set (no model output: it never changes between versions).
REGRESSION_COLUMNS = ("text", "label", "topic", "airline")
#: Share of the bootstrap training rows used for early stopping.
EVAL_FRACTION = 0.1
#: Bootstrap defaults that keep it to minutes on 2 CPU cores (tweets rarely exceed 64 tokens).
BOOTSTRAP_EPOCHS = 1.0
BOOTSTRAP_MAX_LENGTH = 64


@dataclass(frozen=True)
class BootstrapResult:
    """The registered first champion and how it was trained."""

    version: str
    run_id: str
    finetune: FinetuneResult
    reference_accuracy: float
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def reference_rows(rows: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The airline rows of the simulator's reference split (never the production pool)."""
    try:
        from driftloop.simulate import reference_split
    except ImportError:  # pragma: no cover - the simulator lands separately
        log.warning("driftloop.simulate missing: using every airline row as the reference domain")
        reference = list(rows)
    else:
        reference, _pool = reference_split(list(rows), seed)
    return [dict(r) for r in reference if r.get("topic") == AIRLINE_TOPIC]


def frame_of(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """text, label, topic, airline of demo-style rows."""
    import pandas as pd

    return pd.DataFrame(
        {
            "text": [str(r["text"]) for r in rows],
            "label": [int(r["label"]) for r in rows],
            "topic": [r.get("topic") for r in rows],
            "airline": [r.get("airline") for r in rows],
        }
    )


def log_reference_artifacts(
    run: TrackedRun,
    reference: pd.DataFrame,
    replay: pd.DataFrame,
    probabilities: Any,
    regression: pd.DataFrame | None = None,
    regression_probabilities: Any = None,
) -> None:
    """Log a version's ``reference/`` artifacts to ``run``.

    Args:
        run: the training run of the version.
        reference: the drift reference rows (text, label, topic, airline).
        replay: the replay pool (what the version was trained on).
        probabilities: the version's class probabilities of ``reference``, row by row.
        regression: the frozen regression set (default: ``reference`` itself, as for the
            bootstrap).
        regression_probabilities: the version's class probabilities of the regression set
            (default: ``probabilities`` when the regression set is ``reference``).
    """
    ref = reference.drop(columns=["probabilities"], errors="ignore").copy()
    if len(ref) != len(probabilities):
        raise RetrainError(f"{len(ref)} reference rows but {len(probabilities)} probabilities")
    ref["probabilities"] = [list(map(float, p)) for p in probabilities]
    frozen = reference if regression is None else regression
    frozen = frozen.reindex(columns=[c for c in REGRESSION_COLUMNS if c in frozen.columns])
    if regression_probabilities is None and regression is None:
        regression_probabilities = probabilities
    if regression_probabilities is not None:
        if len(frozen) != len(regression_probabilities):
            raise RetrainError(
                f"{len(frozen)} regression rows but {len(regression_probabilities)} probabilities"
            )
        frozen["probabilities"] = [list(map(float, p)) for p in regression_probabilities]
    with tempfile.TemporaryDirectory(prefix="driftloop-ref-") as tmp:
        ref.to_parquet(Path(tmp) / "reference.parquet", index=False)
        frozen.to_parquet(Path(tmp) / "regression.parquet", index=False)
        replay.to_parquet(Path(tmp) / "replay.parquet", index=False)
        run.log_artifacts(tmp, "reference")


def _version_artifact(
    registry: Registry, artifact: str, version: str | None = None
) -> pd.DataFrame:
    """One parquet artifact of the champion's run (or of ``version``'s run)."""
    import pandas as pd

    info = registry.champion() if version is None else registry.version(version)
    if info is None or info.run_id is None:
        raise RetrainError("no champion with a run: run the bootstrap first")
    with tempfile.TemporaryDirectory(prefix="driftloop-ref-") as tmp:
        path = registry.download_run_artifact(info.run_id, artifact, Path(tmp))
        try:
            return pd.read_parquet(path)
        except Exception as exc:
            raise ModelArtifactError(
                f"cannot read {artifact} of version {info.version}: {exc}"
            ) from exc


def load_reference(registry: Registry, version: str | None = None) -> pd.DataFrame:
    """The champion's drift reference: text, label, topic, airline, probabilities.

    What the monitor compares production windows with. It moves only when a retrain that
    rebased it is promoted.
    """
    return _version_artifact(registry, REFERENCE_ARTIFACT, version)


def load_regression(registry: Registry, version: str | None = None) -> pd.DataFrame:
    """The frozen regression set (text, label, topic, airline) for the gate's forgetting check.

    Falls back to ``reference.parquet`` (without probabilities) for versions logged before the
    regression set had its own artifact.
    """
    try:
        frame = _version_artifact(registry, REGRESSION_ARTIFACT, version)
    except ModelArtifactError:
        log.info("no %s: using %s as the regression set", REGRESSION_ARTIFACT, REFERENCE_ARTIFACT)
        frame = _version_artifact(registry, REFERENCE_ARTIFACT, version)
    return frame.drop(columns=["probabilities", "predicted_label"], errors="ignore")


def load_regression_predictions(
    registry: Registry, version: str | None = None
) -> pd.DataFrame | None:
    """The regression set with the version's own probabilities (its bias baseline).

    None for versions logged before the probabilities were stored with it.
    """
    try:
        frame = _version_artifact(registry, REGRESSION_ARTIFACT, version)
    except ModelArtifactError:
        return None
    return frame if "probabilities" in frame.columns else None


def load_replay(registry: Registry, version: str | None = None) -> pd.DataFrame:
    """The champion's replay pool (the data it was trained on): text, label, topic, airline."""
    return _version_artifact(registry, REPLAY_ARTIFACT, version)


def bootstrap(
    settings: Settings,
    *,
    rows: Sequence[dict[str, Any]] | None = None,
    base_model_dir: Path | str | None = None,
    progress: bool = True,
    epochs: float | None = None,
    force: bool = False,
) -> BootstrapResult:
    """Fine-tune the base model on the reference domain, register it as version 1 ``champion``.

    Args:
        settings: the full settings (retrain, model, registry, drift.reference_size, demo.seed).
        rows: demo-style rows (default: ``read_demo_rows()``).
        base_model_dir: starting weights (default: ``model.base_model`` or the bundled MiniLM).
        progress: show the Trainer's progress bar.
        epochs: training epochs (default :data:`BOOTSTRAP_EPOCHS`, not ``retrain.epochs``).
        force: register a new champion even when one exists.

    Raises:
        RetrainError: a champion exists already (without ``force``), or too little data.
    """
    from driftloop.data import read_demo_rows
    from driftloop.models import base_model_path, predict_proba

    started = time.perf_counter()
    registry = Registry(settings.registry)
    existing: VersionInfo | None = registry.champion()
    if existing is not None and not force:
        raise RetrainError(f"a champion exists already (version {existing.version}); use force")
    rt = settings.retrain
    labels = settings.model.labels

    # Reference domain: frozen regression set, training rows, early-stopping rows.
    airline = reference_rows(rows if rows is not None else read_demo_rows(), settings.demo.seed)
    random.Random(rt.seed).shuffle(airline)
    n_ref = min(settings.drift.reference_size, len(airline) // 5)
    reference, rest = airline[:n_ref], airline[n_ref:]
    rest = rest[: rt.max_train_rows]
    n_eval = max(1, round(len(rest) * EVAL_FRACTION))
    eval_rows, train_rows = rest[:n_eval], rest[n_eval:]
    if n_ref < 1 or len(train_rows) < 2:
        raise TrainingDataError(f"too few reference-domain rows to bootstrap ({len(airline)})")
    counts = {"reference": n_ref, "train": len(train_rows), "eval": len(eval_rows)}

    import datasets

    def to_ds(part: Sequence[dict[str, Any]]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"text": [str(r["text"]) for r in part], "label": [int(r["label"]) for r in part]}
        )

    start_dir = Path(base_model_dir or settings.model.base_model or base_model_path())
    with (
        registry.run("bootstrap", tags={"driftloop.kind": "bootstrap"}) as run,
        tempfile.TemporaryDirectory(prefix="driftloop-bootstrap-") as tmp,
    ):
        run.log_params(
            {"base_model": start_dir.name, **{f"rows_{k}": v for k, v in counts.items()}}
        )
        result = finetune(
            start_dir,
            to_ds(train_rows),
            to_ds(eval_rows),
            settings=rt,
            output_dir=tmp,
            learning_rate=rt.bootstrap_learning_rate,
            labels=labels,
            max_length=min(settings.model.max_length, BOOTSTRAP_MAX_LENGTH),
            device=settings.model.device,
            mlflow_run=run,
            progress=progress,
            epochs=epochs if epochs is not None else BOOTSTRAP_EPOCHS,
        )
        from retrain.registry import load_model_dir

        model, tokenizer = load_model_dir(result.output_dir, labels)
        ref_frame = frame_of(reference)
        proba = predict_proba(
            ref_frame["text"].tolist(),
            model,
            tokenizer,
            batch_size=settings.model.batch_size,
            max_length=settings.model.max_length,
            device=settings.model.device,
        )
        ref_accuracy = float((proba.argmax(axis=1) == ref_frame["label"].to_numpy()).mean())
        run.log_metrics({"reference_accuracy": ref_accuracy})
        log_reference_artifacts(run, ref_frame, frame_of(train_rows), proba)
        version = registry.register(
            run,
            result.output_dir,
            tags={
                "window": "reference",
                "kind": "bootstrap",
                "data_counts": counts,
                "eval_accuracy": result.eval_accuracy,
                "reference_accuracy": ref_accuracy,
            },
        )
        registry.promote(
            version.version, approver="bootstrap", reason="initial model on the reference domain"
        )
    seconds = time.perf_counter() - started
    log.info(
        "bootstrap: version %s in %.0fs, reference accuracy %.3f",
        version.version,
        seconds,
        ref_accuracy,
    )
    return BootstrapResult(
        version=version.version,
        run_id=run.run_id,
        finetune=result,
        reference_accuracy=ref_accuracy,
        counts=counts,
        seconds=seconds,
    )
