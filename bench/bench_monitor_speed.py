"""Speed of the monitor's embedding and KS steps against peers measured in the same run.

* ``embed_texts`` (bare MiniLM encoder via ``AutoModel``, mean pooling, length-sorted batches)
  vs ``sentence_transformers.SentenceTransformer(base_model_path()).encode`` on the same demo
  texts: texts/s, the ratio, and the cosine of our vectors to ST's (ST ends with a Normalize
  module; cosine is scale-invariant), which must be >= 0.999 for every text. Also with dynamic
  int8 quantisation on CPU. On a CUDA GPU, when one is present: ours under bf16 autocast vs ST in
  fp32 and in bf16, the device named.
* KS drift on 10k x 384: our vectorised scipy backend vs alibi-detect ``KSDrift``.

Run: ``python -m bench.bench_monitor_speed [--quick]``. Writes ``bench/results/monitor_speed.md``
and ``.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MIN_COSINE = 0.999


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _embed_rows(
    texts: list[str], encoder: Any, tokenizer: Any, st: Any, device: str, repeats: int
) -> tuple[list[dict[str, Any]], np.ndarray, float]:
    """Ours vs ST on one device, interleaved (best of ``repeats``); rows, our vectors, our s."""
    from monitor.embeddings import embed_texts

    def ours() -> np.ndarray:
        return embed_texts(texts, encoder, tokenizer, device=device, progress=False).vectors

    def theirs() -> np.ndarray:
        return st.encode(texts, batch_size=64, convert_to_numpy=True)

    embed_texts(texts[:64], encoder, tokenizer, device=device, progress=False)  # warm-up
    theirs_warm = st.encode(texts[:64], batch_size=64)
    del theirs_warm
    t_ours, t_st = float("inf"), float("inf")
    v_ours = v_st = np.empty(0)
    for _ in range(repeats):  # interleaved, so a burst of load on the shared machine hits both
        t, v_ours = _timed(ours)
        t_ours = min(t_ours, t)
        t, v_st = _timed(theirs)
        t_st = min(t_st, t)
    cos = _cosine(v_ours, v_st)
    n = len(texts)
    ok = bool(cos.min() >= MIN_COSINE)
    rows = [
        {"measure": f"{device}: ours (embed_texts)", "value": f"{n / t_ours:.1f} texts/s"},
        {"measure": f"{device}: sentence-transformers encode", "value": f"{n / t_st:.1f} texts/s"},
        {
            "measure": f"{device}: **ours / ST throughput**",
            "value": f"**{t_st / t_ours:.2f}x**",
            "note": "above 1: ours is faster" if t_st > t_ours else "**below 1: ours is slower**",
        },
        {
            "measure": f"{device}: cosine ours vs ST (min over texts)",
            "value": f"{cos.min():.6f}",
            "note": f"mean {cos.mean():.6f}; goal >= {MIN_COSINE}: {'PASS' if ok else '**FAIL**'}",
        },
    ]
    return rows, v_ours, t_ours


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and write its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 texts, 2k-row KS")
    parser.add_argument("--texts", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from bench.__main__ import header
    from driftloop.data import read_demo_rows
    from driftloop.models import base_model_path
    from monitor.drift import ks_drift
    from monitor.embeddings import embed_texts

    n_texts = args.texts or (300 if args.quick else 1_000)
    repeats = 1 if args.quick else 2
    ks_rows = 2_000 if args.quick else 10_000
    rows = read_demo_rows()
    rng = np.random.default_rng(0)
    texts = [str(rows[i]["text"]) for i in rng.choice(len(rows), n_texts, replace=False)]
    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True).eval()
    st = SentenceTransformer(str(path), device="cpu")
    st.max_seq_length = 128

    table, ours, t_fp32 = _embed_rows(texts, encoder, tokenizer, st, "cpu", repeats)
    t_q, quant = _timed(
        lambda: (
            embed_texts(
                texts, encoder, tokenizer, device="cpu", progress=False, quantize=True
            ).vectors
        )
    )
    cos_q = _cosine(ours, quant)
    table += [
        {"measure": "cpu: ours int8 dynamic", "value": f"{n_texts / t_q:.1f} texts/s"},
        {"measure": "cpu: int8 / fp32 throughput", "value": f"{t_fp32 / t_q:.2f}x"},
        {
            "measure": "cpu: cosine int8 vs fp32 (min)",
            "value": f"{cos_q.min():.6f}",
            "note": f"mean {cos_q.mean():.6f}",
        },
    ]
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        st_gpu = SentenceTransformer(str(path), device="cuda")
        st_gpu.max_seq_length = 128
        rows_gpu, _, _ = _embed_rows(texts, encoder, tokenizer, st_gpu, "cuda", repeats)
        for r in rows_gpu:
            r["measure"] = r["measure"].replace(
                "cuda:", f"GPU {gpu}, ours bf16 autocast vs ST fp32:"
            )
        table += rows_gpu
        st_bf16 = SentenceTransformer(str(path), device="cuda").to(torch.bfloat16)
        st_bf16.max_seq_length = 128
        rows_bf, _, _ = _embed_rows(texts, encoder, tokenizer, st_bf16, "cuda", repeats)
        for r in rows_bf:
            r["measure"] = r["measure"].replace("cuda:", f"GPU {gpu}, ours vs ST bf16:")
        table += rows_bf

    x = rng.normal(size=(ks_rows, 384)).astype(np.float32)
    y = (rng.normal(size=(ks_rows, 384)) + 0.02).astype(np.float32)
    t_scipy, r_scipy = _timed(lambda: ks_drift(x, y, backend="scipy"), repeats=3)
    table.append(
        {
            "measure": f"KS {ks_rows}x384: ours (scipy backend, vectorised)",
            "value": f"{t_scipy:.3f} s",
        }
    )
    try:
        t_alibi, r_alibi = _timed(lambda: ks_drift(x, y, backend="alibi"), repeats=1)
    except Exception as exc:  # alibi-detect is an optional extra
        table.append({"measure": "KS: alibi backend", "value": "n/a", "note": str(exc)})
    else:
        same = np.allclose(r_scipy.feature_p_values, r_alibi.feature_p_values, rtol=1e-5, atol=1e-7)
        table += [
            {
                "measure": f"KS {ks_rows}x384: alibi-detect KSDrift backend",
                "value": f"{t_alibi:.3f} s",
            },
            {
                "measure": "**KS: alibi time / ours**",
                "value": f"**{t_alibi / t_scipy:.1f}x**",
                "note": f"per-feature p-values equal: {same}",
            },
        ]

    head = header(args.quick)
    lines = [
        head,
        "# Embedding throughput and KS backends",
        "",
        f"{n_texts} demo texts, max_length 128, batch 64, same texts and same all-MiniLM-L6-v2"
        f" weights for both embedders; best of {repeats} interleaved run(s); torch threads"
        f" {torch.get_num_threads()}; the machine is shared, so absolute numbers are pessimistic"
        " and the ratios are the result.",
        "",
        f"GPU: {gpu + ' (bf16 rows below)' if gpu else 'no GPU was available in this run; no GPU numbers were measured'}.",
        "",
        "| measure | value | note |",
        "|---|---|---|",
    ]
    write_table("monitor_speed", lines, table, {"texts": n_texts, "gpu": gpu})
    return 0


def write_table(
    stem: str, lines: list[str], table: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """Append the measure/value/note rows to ``lines``; print and write ``stem``.md and .json."""
    lines = lines + [f"| {r['measure']} | {r['value']} | {r.get('note', '')} |" for r in table]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(text, encoding="utf-8")
    (RESULTS / f"{stem}.json").write_text(json.dumps({**extra, "rows": table}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
