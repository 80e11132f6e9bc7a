"""Peak memory of ``PredictionStore.sample`` against ``pandas.read_sql`` + ``.sample()``.

Fills a SQLite prediction log with ``--rows`` rows (bulk insert, no validation), then, each
in a fresh process, draws ``--n`` rows from the full window with the store's top-n query and
with the peer approach (read the whole window into pandas, then ``DataFrame.sample``).
Reports tracemalloc peaks and the process peak RSS (``ru_maxrss``). Goal: the store stays
under 500 MB peak. Run: ``python -m bench.bench_sampling [--rows N]``. Not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

GOAL_MB = 500.0
_WORDS = [
    "flight",
    "delayed",
    "again",
    "crew",
    "great",
    "seat",
    "bag",
    "lost",
    "thanks",
    "service",
    "gate",
    "late",
    "cancelled",
]


def _fill(url: str, rows: int, chunk: int = 50_000) -> tuple[datetime, datetime]:
    from driftloop.settings import StoreSettings
    from monitor.store import open_store, predictions

    store = open_store(StoreSettings(url=url), create=True)
    rng = random.Random(0)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    airlines = ["united", "delta", "jetblue", "american", "southwest", "virgin_america"]
    t0 = time.perf_counter()
    with store.engine.begin() as conn:
        for first in range(0, rows, chunk):
            batch: list[dict[str, Any]] = []
            for i in range(first, min(first + chunk, rows)):
                a, b = rng.random(), rng.random()
                lo, hi = min(a, b), max(a, b)
                batch.append(
                    {
                        "request_id": f"bench-{i:08d}",
                        "timestamp": start + timedelta(seconds=i * 10),
                        "model_name": "bench",
                        "model_version": "1",
                        "text": " ".join(rng.choices(_WORDS, k=16)),
                        "predicted_label": "negative",
                        "probabilities": [lo, hi - lo, 1 - hi],
                        "segments": {"airline": rng.choice(airlines)},
                        "latency_ms": 3.0,
                        "sample_key": rng.random(),
                        "ingested_at": now,
                    }
                )
            conn.execute(predictions.insert(), batch)
            print(f"  inserted {min(first + chunk, rows):,} rows", file=sys.stderr, end="\r")
    print(f"  inserted {rows:,} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    store.engine.dispose()
    return start, start + timedelta(seconds=rows * 10)


def _measure(method: str, url: str, start: datetime, end: datetime, n: int) -> dict[str, float]:
    import pandas as pd
    from sqlalchemy import text

    from driftloop.settings import StoreSettings
    from monitor.store import open_store

    store = open_store(StoreSettings(url=url))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    if method == "store":
        frame = store.sample(start, end, n, seed=1)
    else:
        query = text(
            "SELECT p.*, l.label, l.timestamp AS label_timestamp FROM predictions p "
            "LEFT JOIN labels l ON l.request_id = p.request_id "
            "WHERE p.timestamp >= :start AND p.timestamp < :end"
        )
        window = pd.read_sql(
            query,
            store.engine,
            params={
                "start": start.replace(tzinfo=None).isoformat(" "),
                "end": end.replace(tzinfo=None).isoformat(" "),
            },
        )
        frame = window.sample(n, random_state=1)
        del window
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(frame) == n, len(frame)
    return {
        "seconds": seconds,
        "tracemalloc_peak_mb": peak / 2**20,
        "rss_before_mb": rss_before,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(queue: Any, *args: Any) -> None:
    queue.put(_measure(*args))


def _run_isolated(*args: Any) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    """Fill a store, measure both approaches, print a table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=1_000)
    parser.add_argument("--db", type=Path, default=None, help="Reuse/create this SQLite file.")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        db = args.db or Path(tmp) / "driftloop.db"
        url = f"sqlite:///{db}"
        print(f"filling {db} with {args.rows:,} rows", file=sys.stderr)
        start, end = _fill(url, args.rows) if not db.exists() else _bounds(url)
        results = {m: _run_isolated(m, url, start, end, args.n) for m in ("store", "peer")}

    print(f"\nsampling {args.n:,} of {args.rows:,} rows (SQLite), each in a fresh process")
    header = f"{'method':<34}{'seconds':>9}{'tracemalloc MB':>16}{'peak RSS MB':>13}"
    print(header)
    print("-" * len(header))
    names = {"store": "PredictionStore.sample", "peer": "pd.read_sql(window).sample()"}
    for method, r in results.items():
        print(
            f"{names[method]:<34}{r['seconds']:>9.2f}{r['tracemalloc_peak_mb']:>16.1f}"
            f"{r['rss_peak_mb']:>13.1f}"
        )
    s, p = results["store"], results["peer"]
    print(f"\nbaseline RSS of a fresh process before sampling: {s['rss_before_mb']:.0f} MB")
    print(
        f"peer / store tracemalloc peak: {p['tracemalloc_peak_mb'] / s['tracemalloc_peak_mb']:.0f}x"
    )
    print(f"peer / store peak RSS: {p['rss_peak_mb'] / s['rss_peak_mb']:.1f}x")
    verdict = "OK" if s["rss_peak_mb"] < GOAL_MB else "OVER"
    print(f"goal: store peak RSS < {GOAL_MB:.0f} MB -> {verdict} ({s['rss_peak_mb']:.0f} MB)")


def _bounds(url: str) -> tuple[datetime, datetime]:
    from driftloop.settings import StoreSettings
    from monitor.store import open_store

    bounds = open_store(StoreSettings(url=url)).time_bounds()
    if bounds is None:
        raise SystemExit(f"{url} is empty")
    return bounds[0], bounds[1] + timedelta(seconds=1)


if __name__ == "__main__":
    main()
