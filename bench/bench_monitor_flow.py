"""Wall time and peak memory of a full ``monitor_flow`` over windows of 10k and 100k predictions.

Setup (not timed): a temporary home with a SQLite prediction log and an MLflow registry; the
champion is the bundled all-MiniLM-L6-v2 with a fresh classification head (registered as it is,
no fine-tuning: its weights do not change the flow's cost), its reference = airline tweets of
the demo's reference split with the model's own class probabilities, its replay pool = other
reference-split airline tweets (the PCA's fit rows). The log gets three windows of demo
production-pool texts with class probabilities resampled from the reference's: a warm-up
window (10k rows), a 10k window and a 100k window.

Each window is judged by one ``monitor_flow`` call (Prefect, ephemeral API) in one fresh child
process: sample ``settings.drift.sample_size`` rows, embed (reference and PCA rows through the
per-version cache), every check, the verdict, the Evidently report, state, MLflow. The warm-up
run embeds the reference and the PCA rows once (a new champion's first run); the timed runs
are the steady state. Peak memory is the child's resident-set high-water mark (``VmHWM``,
reset before each run through ``/proc/self/clear_refs``), beside its resident set before it.

Run: ``python -m bench.bench_monitor_flow [--quick]``. Writes ``bench/results/monitor_flow.md``
and ``.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
WARM_UP = "warm-up (first run of a champion)"
WINDOWS = ((WARM_UP, 10_000), ("10k", 10_000), ("100k", 100_000))
#: Quick: no separate warm-up; the 10k run is the champion's first (it embeds the reference).
QUICK_WINDOWS = (("10k (first run: embeds the reference too)", 10_000), ("100k", 100_000))


def _settings(home: Path, reference_size: int | None) -> Any:
    from driftloop.settings import load_settings

    overrides: dict[str, Any] = {
        "home": home,
        "store": {"url": f"sqlite:///{home}/driftloop.db"},
        "registry": {
            "tracking_uri": f"sqlite:///{home}/mlflow.db",
            "artifact_location": str(home / "mlartifacts"),
        },
        "alerts": {"outbox": home / "outbox.jsonl", "urls": []},
        "model": {"device": "cpu"},
    }
    if reference_size is not None:
        overrides["drift"] = {"reference_size": reference_size}
    return load_settings(**overrides)


def register_champion(settings: Any) -> tuple[str, np.ndarray]:
    """Register the base model with a fresh head as champion; returns (version, reference probs)."""
    from driftloop.data import read_demo_rows
    from driftloop.models import load_classifier, predict_proba
    from retrain.bootstrap import frame_of, log_reference_artifacts, reference_rows
    from retrain.registry import Registry

    rows = reference_rows(read_demo_rows(), settings.demo.seed)
    random.Random(0).shuffle(rows)
    n_ref = settings.drift.reference_size
    reference, replay = frame_of(rows[:n_ref]), frame_of(rows[n_ref : 2 * n_ref])
    model, tokenizer = load_classifier(labels=settings.model.labels)
    probs = predict_proba(
        reference["text"].tolist(),
        model,
        tokenizer,
        batch_size=settings.model.batch_size,
        max_length=settings.model.max_length,
        device="cpu",
    )
    registry = Registry(settings.registry)
    with tempfile.TemporaryDirectory(prefix="bench-flow-model-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with registry.run("bench-champion", tags={"driftloop.kind": "bootstrap"}) as run:
            log_reference_artifacts(run, reference, replay, probs)
            version = registry.register(run, tmp, tags={"window": "reference", "kind": "bench"})
            registry.promote(version.version, approver="bench", reason="monitor_flow benchmark")
    return str(version.version), probs


def fill_windows(
    settings: Any, version: str, ref_probs: np.ndarray, sizes: list[int], start: datetime
) -> list[tuple[datetime, datetime]]:
    """Bulk-insert one window per size (a day each) of production-pool texts; their bounds."""
    from driftloop.data import read_demo_rows
    from driftloop.simulate import reference_split
    from monitor.store import open_store, predictions

    _, pool = reference_split(read_demo_rows(), settings.demo.seed)
    texts = [str(r["text"]) for r in pool]
    airlines = [r.get("airline") for r in pool]
    labels = settings.model.labels
    store = open_store(settings.store, labels=labels, create=True)
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    bounds = []
    counter = 0
    for day, size in enumerate(sizes):
        lo = start + timedelta(days=day)
        pick = rng.integers(0, len(texts), size)
        prob_rows = ref_probs[rng.integers(0, len(ref_probs), size)]
        seconds = np.sort(rng.uniform(0, 86_000, size))
        keys = rng.random(size)
        with store.engine.begin() as conn:
            for first in range(0, size, 20_000):
                batch = []
                for j in range(first, min(size, first + 20_000)):
                    p = prob_rows[j]
                    batch.append(
                        {
                            "request_id": f"bench-flow-{counter:09d}",
                            "timestamp": lo + timedelta(seconds=float(seconds[j])),
                            "model_name": settings.registry.model_name,
                            "model_version": version,
                            "text": texts[pick[j]],
                            "predicted_label": labels[int(np.argmax(p))],
                            "probabilities": [float(v) for v in p],
                            "segments": {"airline": airlines[pick[j]]} if airlines[pick[j]] else {},
                            "latency_ms": 5.0,
                            "sample_key": float(keys[j]),
                            "ingested_at": now,
                        }
                    )
                    counter += 1
                conn.execute(predictions.insert(), batch)
        bounds.append((lo, lo + timedelta(days=1)))
    store.engine.dispose()
    return bounds


def _vm(field_name: str) -> float:
    """A ``/proc/self/status`` memory field in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(queue: Any, overrides: dict[str, Any], windows: list[tuple[str, str, str]]) -> None:
    """Run the flow once per window in this fresh process; put one result dict per window."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    try:
        import torch

        from flows.monitor_flow import monitor_flow

        torch.set_num_threads(os.cpu_count() or 1)
        for name, start, end in windows:
            reset = _reset_peak()
            rss_before = _vm("VmRSS")
            t0 = time.perf_counter()
            outcome = monitor_flow(
                window_start=datetime.fromisoformat(start),
                window_end=datetime.fromisoformat(end),
                overrides=overrides,
                trigger_retrain=False,
            )
            seconds = time.perf_counter() - t0
            queue.put(
                {
                    "window": name,
                    "seconds": seconds,
                    "rss_before_mb": rss_before,
                    "peak_rss_mb": _vm("VmHWM"),
                    "peak_is_per_run": reset,
                    "status": outcome["status"],
                    "rows_sampled": outcome["rows"],
                    "breached": outcome["breached"],
                }
            )
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        queue.put(None)


def run(quick: bool) -> dict[str, Any]:
    """Set up, run the three flows in one child process, return the measurements."""
    from flows.wiring import settings_overrides

    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        home = Path(tmp)
        settings = _settings(home, 200 if quick else None)
        t0 = time.perf_counter()
        version, ref_probs = register_champion(settings)
        start = (datetime.now(UTC) - timedelta(days=10)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        windows = QUICK_WINDOWS if quick else WINDOWS
        bounds = fill_windows(settings, version, ref_probs, [s for _, s in windows], start)
        setup_s = time.perf_counter() - t0
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        jobs = [
            (name, a.isoformat(), b.isoformat())
            for (name, _), (a, b) in zip(windows, bounds, strict=True)
        ]
        proc = ctx.Process(target=_child, args=(queue, settings_overrides(settings), jobs))
        proc.start()
        results = []
        while (item := queue.get()) is not None:
            if "error" in item:
                proc.join()
                raise RuntimeError(f"monitor_flow failed in the child: {item['error']}")
            item["window_rows"] = dict(windows)[item["window"]]
            results.append(item)
            print(f"  monitor_flow {item['window']}: {item['seconds']:.1f} s", file=sys.stderr)
        proc.join()
    return {
        "quick": quick,
        "setup_seconds": setup_s,
        "sample_size": settings.drift.sample_size,
        "reference_size": settings.drift.reference_size,
        "runs": results,
    }


def render_markdown(res: dict[str, Any], header: str) -> str:
    """monitor_flow.md: one row per window."""
    lines = [
        header,
        "# Full monitor_flow: wall time and peak memory at 10k and 100k logged predictions",
        "",
        f"One `monitor_flow` call per window (Prefect ephemeral API, SQLite log, MLflow on SQLite,"
        f" real all-MiniLM-L6-v2 on CPU), all in one fresh process. It samples"
        f" `drift.sample_size` = {res['sample_size']} rows of the window and compares them with"
        f" the champion's {res['reference_size']} reference rows: embeddings, every check, the"
        " verdict, the Evidently HTML report, state, MLflow logging."
        + (" Quick mode: reference_size 200, and no separate warm-up run." if res["quick"] else ""),
        "The warm-up run is a new champion's first run (it embeds the reference and the PCA's fit"
        " rows once; later runs read them from the per-version cache); the 10k and 100k runs are"
        " the steady state. Peak RSS is the process's high-water mark during that run (reset"
        " before it), beside its resident set before it (Python, torch, Prefect, the model).",
        "",
        "| window | logged rows | sampled | wall s | RSS before MB | peak RSS MB | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['window']} | {r['window_rows']:,} | {r['rows_sampled']} | {r['seconds']:.1f} |"
            f" {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f}"
            + ("" if r["peak_is_per_run"] else " (process lifetime)")
            + f" | {r['status']} |"
        )
    by = {r["window"]: r for r in res["runs"]}
    if "10k" in by and "100k" in by:
        lines += [
            "",
            f"**100k / 10k wall time: {by['100k']['seconds'] / by['10k']['seconds']:.2f}x** for 10x"
            " the logged rows (the sample size is fixed; only the sampling query sees the window).",
        ]
    lines += [
        "",
        f"Setup (not timed: registering the champion, its reference probabilities, filling"
        f" {sum(r['window_rows'] for r in res['runs']):,} rows): {res['setup_seconds']:.0f} s."
        " The verdict is whatever the checks found (probabilities were resampled from the"
        " reference, texts come from every demo topic), it does not change the work done.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run and write ``bench/results/monitor_flow.md`` and ``.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reference_size 200")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from bench.__main__ import header

    head = header(args.quick)
    res = run(args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = render_markdown(res, head)
    (RESULTS / "monitor_flow.md").write_text(text, encoding="utf-8")
    (RESULTS / "monitor_flow.json").write_text(json.dumps(res, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
