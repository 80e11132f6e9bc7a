"""GPU numbers: embedding throughput and fine-tuning time on CUDA against the same machine's CPU.

* Embeddings: ``embed_texts`` (bf16 autocast on CUDA) vs ``SentenceTransformer.encode`` in fp32
  and in bf16 on the same GPU, and ours on the same machine's CPU; cosine of every vector to
  the fp32 CPU vectors.
* Fine-tuning: the bootstrap recipe (airline reference domain, ``BOOTSTRAP_EPOCHS``,
  ``bootstrap_learning_rate``, max_length 64) through ``retrain.finetune.finetune`` on CUDA
  (bf16 mixed precision, doubled batch) and on the CPU, with held-out accuracy of each.

Needs no MLflow, Prefect or database, so it runs on a bare GPU machine with a few wheels.
Run: ``python -m bench.bench_gpu [--quick]``. Writes ``bench/results/gpu.md`` and ``.json``;
without CUDA it writes that no GPU was available and measures nothing. Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from typing import Any

import numpy as np


def _embedding_rows(texts: list[str], repeats: int) -> list[dict[str, Any]]:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from bench.bench_monitor_speed import _cosine, _embed_rows, _timed
    from driftloop.models import base_model_path
    from monitor.embeddings import embed_texts

    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True).eval()
    gpu = torch.cuda.get_device_name(0)
    n = len(texts)

    # The fp32 CPU vectors are the reference every GPU variant is compared with.
    t_cpu, cpu_vectors = _timed(
        lambda: embed_texts(texts, encoder, tokenizer, device="cpu", progress=False).vectors
    )
    rows: list[dict[str, Any]] = [
        {"measure": "CPU (this machine): ours fp32", "value": f"{n / t_cpu:.1f} texts/s"}
    ]
    st = SentenceTransformer(str(path), device="cuda")
    st.max_seq_length = 128
    table, gpu_vectors, t_gpu = _embed_rows(texts, encoder, tokenizer, st, "cuda", repeats)
    rows += [
        {**r, "measure": r["measure"].replace("cuda:", f"{gpu}, ours bf16 vs ST fp32:")}
        for r in table
    ]
    st_bf16 = SentenceTransformer(str(path), device="cuda").to(torch.bfloat16)
    st_bf16.max_seq_length = 128
    table, _, _ = _embed_rows(texts, encoder, tokenizer, st_bf16, "cuda", repeats)
    rows += [
        {**r, "measure": r["measure"].replace("cuda:", f"{gpu}, ours vs ST bf16:")} for r in table
    ]
    cos = _cosine(cpu_vectors, gpu_vectors)
    rows += [
        {
            "measure": f"{gpu}: ours GPU / ours CPU throughput",
            "value": f"**{t_cpu / t_gpu:.1f}x**",
        },
        {
            "measure": "cosine ours GPU bf16 vs ours CPU fp32 (min)",
            "value": f"{cos.min():.6f}",
            "note": f"mean {cos.mean():.6f}",
        },
    ]
    return rows


def _finetune_rows(
    quick: bool, runs: tuple[tuple[str, int], ...] = (("cuda", 1), ("cuda", 2), ("cpu", 1))
) -> list[dict[str, Any]]:
    """Bootstrap-recipe fine-tunes; each run is (device, batch multiple of retrain.batch_size)."""
    import datasets

    from driftloop.data import AIRLINE_TOPIC, read_demo_rows
    from driftloop.models import base_model_path, load_classifier, predict_proba
    from driftloop.settings import Settings
    from retrain.bootstrap import BOOTSTRAP_EPOCHS, BOOTSTRAP_MAX_LENGTH
    from retrain.finetune import finetune

    settings = Settings()
    rt = settings.retrain
    labels = settings.model.labels
    # The bootstrap's shapes (2,700 training rows, 10 % of them for early stopping, a held-out
    # set), drawn here without the simulator's split so the script needs no database driver.
    airline = [r for r in read_demo_rows() if r["topic"] == AIRLINE_TOPIC]
    random.Random(rt.seed).shuffle(airline)
    n_train = 600 if quick else 2_700
    held, rest = airline[:872], airline[872 : 872 + n_train + n_train // 9]
    eval_rows, train_rows = rest[: n_train // 9], rest[n_train // 9 :]

    def to_ds(part: list[dict[str, Any]]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"text": [str(r["text"]) for r in part], "label": [int(r["label"]) for r in part]}
        )

    held_texts = [str(r["text"]) for r in held]
    held_labels = np.array([int(r["label"]) for r in held])
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for device, multiple in runs:
        run_settings = rt.model_copy(update={"batch_size": rt.batch_size * multiple})
        with tempfile.TemporaryDirectory() as tmp:
            result = finetune(
                base_model_path(),
                to_ds(train_rows),
                to_ds(eval_rows),
                settings=run_settings,
                output_dir=tmp,
                learning_rate=rt.bootstrap_learning_rate,
                labels=labels,
                max_length=BOOTSTRAP_MAX_LENGTH,
                device=device,
                progress=False,
                epochs=BOOTSTRAP_EPOCHS,
            )
            model, tokenizer = load_classifier(result.output_dir, labels)
            proba = predict_proba(held_texts, model, tokenizer, device=device)
        accuracy = float((proba.argmax(axis=1) == held_labels).mean())
        if multiple == 1:
            seconds[device] = result.seconds
        product = " (the product's recipe)" if multiple == 1 else ""
        rows.append(
            {
                "measure": f"fine-tune {device}, batch {run_settings.batch_size}{product}:"
                f" {len(train_rows)} rows, {result.steps} steps",
                "value": f"{result.seconds:.1f} s",
                "note": f"eval acc {result.eval_accuracy:.3f}; held-out acc {accuracy:.3f}"
                f" on {len(held)} airline tweets; loss {result.train_loss_first:.3f} ->"
                f" {result.train_loss_last:.3f}",
            }
        )
    if "cuda" not in seconds or "cpu" not in seconds:
        return rows
    rows.append(
        {
            "measure": "**fine-tune: CPU time / GPU time**",
            "value": f"**{seconds['cpu'] / seconds['cuda']:.1f}x**",
            "note": "same batch on both; GPU in bf16 mixed precision, as the product does",
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the GPU table (or say that no GPU was available)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 texts, 600 training rows")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import sentence_transformers
    import torch
    import transformers

    from bench.__main__ import header
    from bench.bench_monitor_speed import write_table
    from driftloop.data import read_demo_rows

    lines = [header(args.quick), "# GPU numbers", ""]
    table: list[dict[str, Any]] = []
    if not torch.cuda.is_available():
        lines.append("No GPU was available in this run; no GPU numbers were measured.")
    else:
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        demo = read_demo_rows()
        n_texts = 500 if args.quick else 4_000
        texts = [str(demo[i]["text"]) for i in rng.choice(len(demo), n_texts, replace=False)]
        table = _embedding_rows(texts, repeats=2 if args.quick else 3)
        table += _finetune_rows(args.quick)
        lines += [
            f"Device: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}; CPU: the same"
            f" machine's {os.cpu_count()} cores (torch threads {torch.get_num_threads()}). torch"
            f" {torch.__version__}, transformers {transformers.__version__},"
            f" sentence-transformers {sentence_transformers.__version__}. Embeddings: {n_texts}"
            " demo texts, max_length 128, batch 64, best of interleaved runs. The weights are"
            " all-MiniLM-L6-v2 carried to the GPU machine as fp16 and widened back to fp32 (the"
            " transfer limit is 64 MiB), so they differ from the package's by fp16 rounding;"
            f" every variant here uses the same weights. Took {time.perf_counter() - started:.0f} s.",
            "",
            "| measure | value | note |",
            "|---|---|---|",
        ]
    write_table("gpu", lines, table, {})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
