"""Speed of the monitor's embedding and KS steps against peers measured in the same run.

* ``embed_texts`` (bare MiniLM encoder via ``AutoModel``, mean pooling, length-sorted batches)
  vs ``sentence_transformers.SentenceTransformer(base_model_path()).encode`` on the same demo
  texts: texts/s, the ratio, and the cosine of our vectors to ST's (ST ends with a Normalize
  module; cosine is scale-invariant). Also with dynamic int8 quantisation on CPU.
* KS drift on 10k x 384: our vectorised scipy backend vs alibi-detect ``KSDrift``.

Run: ``python -m bench.bench_monitor_speed [--quick]``. Writes ``bench/results/monitor_speed.md``.
Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _timed(fn, repeats: int = 1):  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print/write its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 texts, 2k-row KS")
    parser.add_argument("--texts", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from driftloop.data import read_demo_rows
    from driftloop.models import base_model_path
    from monitor.drift import ks_drift
    from monitor.embeddings import embed_texts

    n_texts = args.texts or (300 if args.quick else 2_000)
    ks_rows = 2_000 if args.quick else 10_000
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = read_demo_rows()
    rng = np.random.default_rng(0)
    texts = [str(rows[i]["text"]) for i in rng.choice(len(rows), n_texts, replace=False)]
    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True).eval()
    st = SentenceTransformer(str(path), device=device)
    st.max_seq_length = 128

    embed_texts(texts[:64], encoder, tokenizer, device=device, progress=False)  # warm-up
    st.encode(texts[:64], batch_size=64)
    t_ours, ours = _timed(
        lambda: embed_texts(texts, encoder, tokenizer, device=device, progress=False).vectors
    )
    t_st, theirs = _timed(lambda: st.encode(texts, batch_size=64, convert_to_numpy=True))
    cos = _cosine(ours, theirs)
    table = [
        ("embed: ours (embed_texts)", f"{n_texts / t_ours:.1f} texts/s", ""),
        ("embed: sentence-transformers encode", f"{n_texts / t_st:.1f} texts/s", ""),
        ("embed: ours / ST throughput", f"{t_st / t_ours:.2f}x", ""),
        ("embed: cosine ours vs ST", f"min {cos.min():.6f}", f"mean {cos.mean():.6f}"),
    ]
    if device == "cpu":
        t_q, quant = _timed(
            lambda: (
                embed_texts(
                    texts, encoder, tokenizer, device="cpu", progress=False, quantize=True
                ).vectors
            )
        )
        cos_q = _cosine(ours, quant)
        table += [
            ("embed: ours int8 dynamic", f"{n_texts / t_q:.1f} texts/s", ""),
            ("embed: int8 / fp32 throughput", f"{t_ours / t_q:.2f}x", ""),
            ("embed: cosine int8 vs fp32", f"min {cos_q.min():.6f}", f"mean {cos_q.mean():.6f}"),
        ]

    x = rng.normal(size=(ks_rows, 384)).astype(np.float32)
    y = (rng.normal(size=(ks_rows, 384)) + 0.02).astype(np.float32)
    t_scipy, r_scipy = _timed(lambda: ks_drift(x, y, backend="scipy"), repeats=3)
    try:
        t_alibi, r_alibi = _timed(lambda: ks_drift(x, y, backend="alibi"), repeats=1)
        same = np.allclose(r_scipy.feature_p_values, r_alibi.feature_p_values, rtol=1e-5, atol=1e-7)
        table += [
            (f"KS {ks_rows}x384: scipy vectorised", f"{t_scipy:.3f} s", ""),
            (f"KS {ks_rows}x384: alibi KSDrift", f"{t_alibi:.3f} s", ""),
            ("KS: alibi / ours time", f"{t_alibi / t_scipy:.1f}x", f"p-values equal: {same}"),
        ]
    except Exception as exc:  # alibi-detect is optional
        table += [(f"KS {ks_rows}x384: scipy vectorised", f"{t_scipy:.3f} s", f"alibi: {exc}")]

    header = (
        f"# Monitor speed\n\n{platform.platform()}, {os.cpu_count()} CPUs, device {device}, "
        f"torch threads {torch.get_num_threads()}, {n_texts} demo texts, max_length 128, "
        f"batch 64{' (--quick)' if args.quick else ''}. Single run; the machine may be shared.\n\n"
    )
    lines = ["| measure | value | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in table]
    text = header + "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "monitor_speed.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
