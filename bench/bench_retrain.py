"""Incremental retrain vs a full retrain from the base model on a real topic shift (issues 4, 6).

The champion is bootstrapped on airline tweets (the old domain) with the real MiniLM; production
then moves to the other topics of the demo corpus (plus some airline traffic) with labels
arriving. Measured on two test sets that nothing is trained on (new-domain tweets and an airline
holdout from the production pool): the champion, the incremental retrain of
:func:`retrain.pipeline.retrain` (replay on, from the champion), and a full retrain from the base
model on old + new training rows (:func:`retrain.finetune.finetune`, the bootstrap's learning
rate, the same epochs and early stopping as the incremental one).

Reports accuracy before/after, forgetting, recovery = (incremental - champion) / (full -
champion) on the new domain, wall times, and PASS/FAIL of issue 4's criterion. Writes
``bench/results/retrain.md`` and ``retrain.json``. The bootstrapped champion may be reused from
``bench/results/cache/`` (git-ignored); the output says whether it was.

Run: ``python -m bench.bench_retrain [--quick]``. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.settings import Settings

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "cache"
#: Topics that are neither the old domain nor a mixed bag.
EXCLUDED_NEW_TOPICS = ("airline", "other")
#: Bump when the cached bootstrap would no longer match what this script would train.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run (rows, lengths, epochs)."""

    quick: bool
    max_train_rows: int
    reference_size: int
    production_new: int
    production_airline: int
    test_new: int
    test_airline: int
    epochs: float
    bootstrap_epochs: float
    max_length: int = 64
    seed: int = 42

    @staticmethod
    def make(quick: bool) -> Config:
        """Quick: well under 2 minutes on 2 CPU cores; full: under 10 minutes."""
        if quick:
            return Config(
                quick=True,
                max_train_rows=200,
                reference_size=100,
                production_new=200,
                production_airline=40,
                test_new=150,
                test_airline=150,
                epochs=1.0,
                bootstrap_epochs=1.0,
            )
        return Config(
            quick=False,
            max_train_rows=800,
            reference_size=300,
            production_new=900,
            production_airline=200,
            test_new=600,
            test_airline=600,
            epochs=2.0,
            bootstrap_epochs=3.0,
        )


@dataclass(frozen=True)
class Splits:
    """The labelled production frame and the two never-trained-on test sets."""

    production: pd.DataFrame
    test_new: pd.DataFrame
    test_airline: pd.DataFrame


@dataclass(frozen=True)
class ModelScore:
    """Accuracy of one model on both test sets, and what it cost to train."""

    name: str
    new_accuracy: float
    airline_accuracy: float
    train_seconds: float
    total_seconds: float
    train_rows: int
    steps: int


def _frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "text": [str(r["text"]) for r in rows],
            "label": [int(r["label"]) for r in rows],
            "topic": [str(r["topic"]) for r in rows],
        }
    )


def build_splits(rows: Sequence[dict[str, Any]], cfg: Config, demo_seed: int) -> Splits:
    """Disjoint production and test rows from the simulator's production pool (never reference)."""
    import pandas as pd

    from driftloop.data import AIRLINE_TOPIC
    from driftloop.simulate import reference_split

    _reference, pool = reference_split(list(rows), demo_seed)
    seen: set[str] = set()
    distinct = []
    for row in pool:  # retweets: one text lands on one side only
        if row["text"] not in seen:
            seen.add(str(row["text"]))
            distinct.append(row)
    new = [r for r in distinct if r["topic"] not in EXCLUDED_NEW_TOPICS]
    airline = [r for r in distinct if r["topic"] == AIRLINE_TOPIC]
    rng = random.Random(cfg.seed)
    rng.shuffle(new)
    rng.shuffle(airline)
    test_new, new = new[: cfg.test_new], new[cfg.test_new :]
    test_airline, airline = airline[: cfg.test_airline], airline[cfg.test_airline :]
    traffic = new[: cfg.production_new] + airline[: cfg.production_airline]
    rng.shuffle(traffic)
    production = pd.DataFrame(
        {
            "request_id": [f"bench-{i:06d}" for i in range(len(traffic))],
            "timestamp": pd.Timestamp("2026-01-02", tz="UTC"),
            "text": [str(r["text"]) for r in traffic],
            "label": [str(r["label_name"]) for r in traffic],
            "segments": [{"topic": r["topic"], "airline": r["airline"]} for r in traffic],
        }
    )
    return Splits(production, _frame(test_new), _frame(test_airline))


def bench_settings(home: Path, cfg: Config) -> Settings:
    """Default gate thresholds; sizes from ``cfg``; MLflow in ``home``."""
    from driftloop.settings import load_settings

    base = load_settings(
        home=home,
        store={"url": f"sqlite:///{home}/driftloop.db"},
        registry={
            "tracking_uri": f"sqlite:///{home}/mlflow.db",
            "artifact_location": str(home / "mlartifacts"),
        },
        alerts={"outbox": home / "outbox.jsonl"},
    )
    return base.model_copy(
        update={
            "model": base.model.model_copy(update={"max_length": cfg.max_length}),
            "retrain": base.retrain.model_copy(
                update={
                    "max_train_rows": cfg.max_train_rows,
                    "epochs": cfg.epochs,
                    "min_rows": min(base.retrain.min_rows, cfg.production_new // 2),
                    "seed": cfg.seed,
                }
            ),
            "drift": base.drift.model_copy(update={"reference_size": cfg.reference_size}),
        }
    )


def _cache_key(cfg: Config, settings: Settings) -> str:
    import torch
    import transformers

    from driftloop.models import base_model_path

    parts = {
        "format": CACHE_FORMAT,
        "max_train_rows": cfg.max_train_rows,
        "reference_size": cfg.reference_size,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "demo_seed": settings.demo.seed,
        "lr": settings.retrain.bootstrap_learning_rate,
        "epochs": cfg.bootstrap_epochs,
        "batch_size": settings.retrain.batch_size,
        "base": str(settings.model.base_model or base_model_path()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return f"bootstrap-{digest}"


def bootstrap_champion(
    settings: Settings, rows: Sequence[dict[str, Any]], cfg: Config, *, use_cache: bool
) -> dict[str, Any]:
    """Register version 1 ``champion``: bootstrapped now, or re-registered from the cache."""
    from retrain.bootstrap import bootstrap, load_reference, load_replay, log_reference_artifacts
    from retrain.registry import Registry

    registry = Registry(settings.registry)
    cached = CACHE / _cache_key(cfg, settings)
    if use_cache and (cached / "meta.json").is_file():
        import pandas as pd

        meta = json.loads((cached / "meta.json").read_text())
        reference = pd.read_parquet(cached / "reference.parquet")
        replay = pd.read_parquet(cached / "replay.parquet")
        with registry.run("bootstrap", tags={"driftloop.kind": "bootstrap"}) as run:
            log_reference_artifacts(
                run,
                reference.drop(columns=["probabilities"]),
                replay,
                np.asarray(reference["probabilities"].tolist()),
            )
            version = registry.register(
                run, cached / "model", tags={"window": "reference", "kind": "bootstrap"}
            )
            registry.promote(version.version, approver="bench", reason="cached bootstrap")
        log.info("bootstrap reused from %s", cached)
        return {**meta, "reused": True, "cache": str(cached.relative_to(RESULTS.parent.parent))}

    result = bootstrap(settings, rows=rows, progress=True, epochs=cfg.bootstrap_epochs)
    meta = {
        "seconds": result.seconds,
        "train_seconds": result.finetune.seconds,
        "steps": result.finetune.steps,
        "counts": result.counts,
        "reference_accuracy": result.reference_accuracy,
    }
    if use_cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=CACHE))
        try:
            registry.download(result.version, staging)
            load_reference(registry).to_parquet(staging / "reference.parquet", index=False)
            load_replay(registry).to_parquet(staging / "replay.parquet", index=False)
            (staging / "meta.json").write_text(json.dumps(meta, indent=1))
            shutil.rmtree(cached, ignore_errors=True)
            staging.rename(cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {**meta, "reused": False, "cache": str(cached.relative_to(RESULTS.parent.parent))}


def accuracy(model_dir: Path, frame: pd.DataFrame, settings: Settings) -> float:
    """Accuracy of the saved model in ``model_dir`` on ``frame`` (text, label)."""
    from driftloop.models import predict_proba
    from retrain.registry import load_model_dir

    model, tokenizer = load_model_dir(model_dir, settings.model.labels)
    proba = predict_proba(
        frame["text"].tolist(),
        model,
        tokenizer,
        batch_size=settings.model.batch_size,
        max_length=settings.model.max_length,
        device=settings.model.device,
    )
    return float((proba.argmax(axis=1) == frame["label"].to_numpy()).mean())


def full_retrain(
    settings: Settings,
    old: pd.DataFrame,
    production: pd.DataFrame,
    output_dir: Path,
    epochs: float,
) -> tuple[Path, float, int, int, dict[str, int]]:
    """The bootstrap recipe from the base model on the champion's training rows + the new ones.

    ``old`` is the first champion's replay pool (its training rows), read before the incremental
    retrain promotes a version whose pool already holds new rows.

        The new training rows and the early-stopping holdout are the ones the incremental retrain
        used: the pipeline's drift-reference holdout and :func:`retrain.data.assemble_training_set`
        are deterministic for a seed (the caller compares the counts).

        Returns:
            (model dir, training seconds, optimiser steps, training rows, assembly counts).
    """
    import datasets

    from driftloop.models import base_model_path
    from retrain.data import assemble_training_set
    from retrain.finetune import finetune
    from retrain.pipeline import (
        MIN_REFERENCE_ROWS,
        REFERENCE_HOLDOUT_FRACTION,
        split_reference_holdout,
    )

    rt, labels = settings.retrain, settings.model.labels
    held, to_train = split_reference_holdout(
        production, fraction=REFERENCE_HOLDOUT_FRACTION, seed=rt.seed
    )
    if len(held) < max(MIN_REFERENCE_ROWS, settings.drift.min_samples):
        held, to_train = held.iloc[:0], production  # the pipeline then trains on every row
    training = assemble_training_set(to_train, old, settings=rt, labels=labels)
    new = training.train.to_pandas()
    new = new[new["source"] == "new"]
    texts = old["text"].astype(str).tolist() + new["text"].tolist()
    ids = old["label"].astype(int).tolist() + new["label"].astype(int).tolist()
    order = np.random.default_rng(rt.seed).permutation(len(texts))
    train = datasets.Dataset.from_dict(
        {"text": [texts[i] for i in order], "label": [ids[i] for i in order]}
    )
    holdout = training.holdout.select_columns(["text", "label"])
    result = finetune(
        settings.model.base_model or base_model_path(),
        train,
        holdout,
        settings=rt,
        output_dir=output_dir,
        learning_rate=rt.bootstrap_learning_rate,
        labels=labels,
        max_length=settings.model.max_length,
        device=settings.model.device,
        progress=True,
        epochs=epochs,
    )
    counts = {**training.counts, "held_out_for_reference": len(held)}
    return result.output_dir, result.seconds, result.steps, len(train), counts


def _majority(frame: pd.DataFrame) -> float:
    """Accuracy of always answering the test set's most frequent class."""
    return float(frame["label"].value_counts(normalize=True).max())


def _ci95(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n) if n else float("nan")


def run(cfg: Config, *, use_cache: bool = True) -> dict[str, Any]:
    """Bootstrap (or reuse), incremental retrain, full retrain; score all three."""
    from driftloop.data import read_demo_rows
    from retrain.bootstrap import load_replay
    from retrain.pipeline import retrain
    from retrain.registry import Registry

    t_run = time.perf_counter()
    rows = read_demo_rows()
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-retrain-") as tmp_name:
        tmp = Path(tmp_name)
        settings = bench_settings(tmp / "home", cfg)
        splits = build_splits(rows, cfg, settings.demo.seed)
        log.info(
            "production %d rows, test sets: new %d, airline %d",
            len(splits.production),
            len(splits.test_new),
            len(splits.test_airline),
        )

        boot = bootstrap_champion(settings, rows, cfg, use_cache=use_cache)
        registry = Registry(settings.registry)
        champion_dir, champion = registry.download_champion()
        old_rows = load_replay(registry)  # the champion's training rows, before any promotion
        scores = [
            ModelScore(
                name="champion (bootstrap on airline)",
                new_accuracy=accuracy(champion_dir, splits.test_new, settings),
                airline_accuracy=accuracy(champion_dir, splits.test_airline, settings),
                train_seconds=float(boot.get("train_seconds", 0.0)),
                total_seconds=float(boot["seconds"]),
                train_rows=int(boot["counts"]["train"]),
                steps=int(boot.get("steps", 0)),
            )
        ]

        log.info("incremental retrain (pipeline, replay on)")
        outcome = retrain(
            settings,
            splits.production,
            window="bench",
            approver="bench",
            reason="topic shift",
        )
        inc_dir = registry.download(outcome.version, tmp / "incremental")
        scores.append(
            ModelScore(
                name="incremental (retrain pipeline)",
                new_accuracy=accuracy(inc_dir, splits.test_new, settings),
                airline_accuracy=accuracy(inc_dir, splits.test_airline, settings),
                train_seconds=outcome.finetune.seconds,
                total_seconds=outcome.seconds,
                train_rows=int(outcome.counts["train"]),
                steps=outcome.finetune.steps,
            )
        )

        log.info("full retrain from the base model on old + new rows")
        t0 = time.perf_counter()
        full_dir, full_s, full_steps, full_rows, full_counts = full_retrain(
            settings, old_rows, splits.production, tmp / "full", cfg.bootstrap_epochs
        )
        same_rows = all(
            full_counts[k] == outcome.counts[k] for k in ("new_rows", "new_train", "holdout")
        )
        if not same_rows:
            log.warning(
                "the full retrain's new rows differ from the incremental's: %s vs %s",
                full_counts,
                outcome.counts,
            )
        full_total = time.perf_counter() - t0
        scores.append(
            ModelScore(
                name="full retrain from base",
                new_accuracy=accuracy(full_dir, splits.test_new, settings),
                airline_accuracy=accuracy(full_dir, splits.test_airline, settings),
                train_seconds=full_s,
                total_seconds=full_total,
                train_rows=full_rows,
                steps=full_steps,
            )
        )

    before, inc, full = scores
    gain_full = full.new_accuracy - before.new_accuracy
    recovery = (inc.new_accuracy - before.new_accuracy) / gain_full if gain_full > 0 else None
    forgetting = before.airline_accuracy - inc.airline_accuracy
    tolerance = settings.retrain.max_forgetting
    rises = inc.new_accuracy > before.new_accuracy
    within = forgetting <= tolerance
    return {
        "config": asdict(cfg),
        "champion_version": champion.version,
        "bootstrap": boot,
        "counts": outcome.counts,
        "full_counts": full_counts,
        "same_new_rows": same_rows,
        "full_old_rows": len(old_rows),
        "reference_rebased": outcome.reference_rebased,
        "scores": [asdict(s) for s in scores],
        "n_test_new": len(splits.test_new),
        "n_test_airline": len(splits.test_airline),
        "majority_new": _majority(splits.test_new),
        "majority_airline": _majority(splits.test_airline),
        "new_topics": sorted(set(splits.test_new["topic"])),
        "gain_new": inc.new_accuracy - before.new_accuracy,
        "gain_new_full": gain_full,
        "forgetting": forgetting,
        "forgetting_full": before.airline_accuracy - full.airline_accuracy,
        "recovery": recovery,
        "max_forgetting": tolerance,
        "criteria": {"new_rises": rises, "forgetting_within": within, "pass": rises and within},
        "gate": {
            "promoted": outcome.promoted,
            "version": outcome.version,
            "reasons": list(outcome.reasons),
            "gain": outcome.gate.gain,
            "forgetting": outcome.gate.forgetting,
            "min_gain": settings.retrain.min_gain,
        },
        "seconds": time.perf_counter() - t_run,
    }


def render_markdown(res: dict[str, Any], head: str) -> str:
    """The result table with the run header."""
    n_new, n_air = res["n_test_new"], res["n_test_airline"]
    boot = res["bootstrap"]
    cfg = res["config"]
    len_production = cfg["production_new"] + cfg["production_airline"]
    crit = res["criteria"]
    lines = [
        head,
        "# Incremental retrain vs full retrain on a topic shift",
        "",
        f"Old domain: airline tweets; new domain: {', '.join(res['new_topics'])} (demo corpus)."
        f" Real all-MiniLM-L6-v2, max_length {res['config']['max_length']}, seed"
        f" {res['config']['seed']}. Test sets, never trained on: {n_new} new-domain rows and"
        f" {n_air} airline rows from the production pool. ± is the 95% normal interval;"
        f" always answering the majority class scores {res['majority_new']:.3f} (new) and"
        f" {res['majority_airline']:.3f} (airline).",
        "",
        f"Champion: version {res['champion_version']}, bootstrapped from the base model on"
        f" {boot['counts']['train']} airline rows, {cfg['bootstrap_epochs']:g} epoch(s) at"
        " `retrain.bootstrap_learning_rate` ("
        + (
            f"reused from the cache `{boot['cache']}`; its times are from the run that built it"
            if boot["reused"]
            else "trained in this run"
        )
        + ").",
        "",
        f"Production: {len_production} labelled rows ({cfg['production_new']} new-domain,"
        f" {cfg['production_airline']} airline); "
        + (
            f"the pipeline held {res['full_counts']['held_out_for_reference']} of them out as"
            " its next drift reference and"
            if res["reference_rebased"]
            else "too few for a new drift reference, so the pipeline"
        )
        + f" trained on {res['counts']['new_train']} new + {res['counts']['replay']} replay rows,"
        " with"
        f" {res['counts']['holdout']} new rows held out for early stopping and its gate.",
        "",
        f"- **incremental**: `retrain.pipeline.retrain()` from the champion, up to"
        f" {cfg['epochs']:g} epochs at `retrain.learning_rate` (the product's settings).",
        f"- **full**: from the base model with the bootstrap's recipe ({cfg['bootstrap_epochs']:g}"
        " epoch(s) at `retrain.bootstrap_learning_rate`) on all the champion's training rows"
        f" ({res['full_old_rows']}) plus the same new training rows"
        + ("" if res["same_new_rows"] else " (**warning: its new rows differ, see the JSON**)")
        + "; same early-stopping holdout.",
        "",
        "| model | new-domain accuracy | airline accuracy | forgetting | train rows | steps |"
        " train s | total s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    champion_air = res["scores"][0]["airline_accuracy"]
    for i, s in enumerate(res["scores"]):
        forgetting = "—" if i == 0 else f"{champion_air - s['airline_accuracy']:+.3f}"
        lines.append(
            f"| {s['name']} | {s['new_accuracy']:.3f} ± {_ci95(s['new_accuracy'], n_new):.3f}"
            f" | {s['airline_accuracy']:.3f} ± {_ci95(s['airline_accuracy'], n_air):.3f}"
            f" | {forgetting} | {s['train_rows']} | {s['steps']} | {s['train_seconds']:.0f}"
            f" | {s['total_seconds']:.0f} |"
        )
    recovery = res["recovery"]
    gate = res["gate"]
    lines += [
        "",
        f"- New-domain gain: incremental {res['gain_new']:+.3f}, full {res['gain_new_full']:+.3f};"
        " **recovery** (incremental gain / full gain) = "
        + (f"**{recovery:.2f}**" if recovery is not None else "n/a (the full retrain did not gain)")
        + ".",
        f"- Forgetting on the airline holdout (champion − incremental): {res['forgetting']:+.3f}"
        f" (tolerance `retrain.max_forgetting` = {res['max_forgetting']}); full retrain:"
        f" {res['forgetting_full']:+.3f}.",
        f"- The pipeline's gate (on its own new-domain holdout and frozen reference set): gain"
        f" {gate['gain']:+.3f} (needs {gate['min_gain']}), forgetting {gate['forgetting']:+.3f};"
        f" version {gate['version']} "
        + ("promoted." if gate["promoted"] else f"not promoted: {'; '.join(gate['reasons'])}."),
        "- Train s is the fine-tuning alone; total s of the incremental row is the whole"
        " `retrain()` call (download, assembly, training, gate, registration, promotion).",
        "",
        "**Issue 4 criterion** (new-topic accuracy rises above the champion's, airline holdout"
        " drops by no more than `max_forgetting`): "
        + ("**PASS**" if crit["pass"] else "**FAIL**")
        + f" (rises: {'yes' if crit['new_rises'] else 'no'};"
        f" forgetting within tolerance: {'yes' if crit['forgetting_within'] else 'no'}).",
        "",
        f"Benchmark wall time: {res['seconds']:.0f} s"
        + (
            " (quick mode: a smoke test; too few rows and steps for the accuracies to mean much)."
            if res["config"]["quick"]
            else "."
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, write ``retrain.md``/``retrain.json``, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_retrain", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sets (< 2 minutes on 2 cores)")
    parser.add_argument(
        "--no-cache", action="store_true", help="bootstrap anew and do not write the cache"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from bench.__main__ import header

    head = header(args.quick).replace("`python -m bench", "`python -m bench.bench_retrain", 1)
    res = run(Config.make(args.quick), use_cache=not args.no_cache)
    res["header"] = head
    text = render_markdown(res, head)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "retrain.md").write_text(text)
    (RESULTS / "retrain.json").write_text(json.dumps(res, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
