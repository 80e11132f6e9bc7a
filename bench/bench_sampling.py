"""Peak memory of ``PredictionStore.sample`` against ``pandas.read_sql`` + ``.sample()``.

Fills a SQLite prediction log with ``--rows`` rows (bulk insert, no validation), then, each
in a fresh process, draws ``--n`` rows from the full window with the store's top-n query and
with the peer approach (read the whole window into pandas, then ``DataFrame.sample``).
Reports tracemalloc peaks and the process peak RSS (``VmHWM`` of the fresh process; not
``ru_maxrss``, which Linux carries over from the parent across fork + exec). Goal: the store stays
under 500 MB peak at 1,000,000 rows. ``--quick`` uses 200,000 rows (the goal is judged at 1M
only). Run: ``python -m bench.bench_sampling [--quick] [--rows N]``. Writes
``bench/results/sampling.md`` and ``.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
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
GOAL_ROWS = 1_000_000
RESULTS = Path(__file__).resolve().parent / "results"
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
    rss_before = _proc_mb("VmHWM")
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
        "rss_peak_mb": _proc_mb("VmHWM"),
    }


def _proc_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` in MB; ``ru_maxrss`` where there is no /proc."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    """Fill a store, measure both approaches, print and write a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="default 1,000,000 (quick 200,000)")
    parser.add_argument("--n", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="200,000 rows")
    parser.add_argument("--db", type=Path, default=None, help="Reuse/create this SQLite file.")
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else GOAL_ROWS)

    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        db = args.db or Path(tmp) / "driftloop.db"
        url = f"sqlite:///{db}"
        print(f"filling {db} with {rows:,} rows", file=sys.stderr)
        t0 = time.perf_counter()
        start, end = _fill(url, rows) if not db.exists() else _bounds(url)
        fill_s = time.perf_counter() - t0
        results = {m: _run_isolated(m, url, start, end, args.n) for m in ("store", "peer")}

    names = {"store": "PredictionStore.sample", "peer": "pd.read_sql(window).sample()"}
    s, p = results["store"], results["peer"]
    judged = rows >= GOAL_ROWS
    verdict = ("PASS" if s["rss_peak_mb"] < GOAL_MB else "**FAIL**") if judged else "not judged"
    from bench.__main__ import header

    lines = [
        header(args.quick),
        f"# Sampling {args.n:,} rows from a window of {rows:,} logged predictions",
        "",
        "SQLite prediction log; each approach runs in a fresh process. Peak RSS is the process's"
        " high-water mark (it includes the interpreter and imports, measured before sampling"
        f" at {s['rss_before_mb']:.0f} MB); tracemalloc counts Python allocations during the call.",
        "",
        "| method | seconds | tracemalloc peak MB | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for method, r in results.items():
        lines.append(
            f"| {names[method]} | {r['seconds']:.2f} | {r['tracemalloc_peak_mb']:.1f} |"
            f" {r['rss_peak_mb']:.0f} |"
        )
    lines += [
        "",
        f"- Peer / store tracemalloc peak: **{p['tracemalloc_peak_mb'] / s['tracemalloc_peak_mb']:.0f}x**;"
        f" peak RSS: **{p['rss_peak_mb'] / s['rss_peak_mb']:.1f}x**; time:"
        f" **{p['seconds'] / s['seconds']:.1f}x**.",
        f"- Goal (issue 2): the store's peak RSS stays under {GOAL_MB:.0f} MB when sampling a window"
        f" of {GOAL_ROWS:,} rows: **{verdict}** ({s['rss_peak_mb']:.0f} MB"
        + ("" if judged else f"; this quick run used {rows:,} rows")
        + ").",
        f"- Filling the log (bulk insert, not timed above): {fill_s:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sampling.md").write_text(text, encoding="utf-8")
    (RESULTS / "sampling.json").write_text(
        json.dumps({"rows": rows, "n": args.n, "goal_mb": GOAL_MB, "results": results}, indent=1)
    )


def _bounds(url: str) -> tuple[datetime, datetime]:
    from driftloop.settings import StoreSettings
    from monitor.store import open_store

    bounds = open_store(StoreSettings(url=url)).time_bounds()
    if bounds is None:
        raise SystemExit(f"{url} is empty")
    return bounds[0], bounds[1] + timedelta(seconds=1)


if __name__ == "__main__":
    main()
