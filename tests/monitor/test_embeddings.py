"""embed_texts and EmbeddingCache with the tiny BERT; a drift verdict on real demo topics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import monitor.embeddings as emb
from monitor.drift import embedding_drift, fit_projection
from monitor.embeddings import EmbeddingCache, embed_texts
from monitor.errors import InputError

TEXTS = [
    "the flight was late",
    "great crew, thanks",
    "a much longer text about a delayed flight and a lost bag and a very long wait at the gate",
    "ok",
    "my bag never arrived and nobody answers the phone",
]


def test_shape_dtype_and_order_restored(tiny_model) -> None:  # type: ignore[no-untyped-def]
    res = embed_texts(TEXTS, tiny_model.model, tiny_model.tokenizer, batch_size=2, device="cpu")
    assert res.vectors.shape == (5, 32) and res.vectors.dtype == np.float32
    assert res.n_truncated == 0 and res.max_length == 128
    # One text at a time (no sorting, no padding) must give the same rows in the same order.
    single = np.vstack(
        [
            embed_texts([t], tiny_model.model, tiny_model.tokenizer, device="cpu").vectors
            for t in TEXTS
        ]
    )
    np.testing.assert_allclose(res.vectors, single, atol=1e-5)
    reversed_ = embed_texts(TEXTS[::-1], tiny_model.model, tiny_model.tokenizer, device="cpu")
    np.testing.assert_allclose(reversed_.vectors[::-1], res.vectors, atol=1e-5)


def test_truncation_counted_and_logged(tiny_model, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level("WARNING", logger="monitor.embeddings"):
        res = embed_texts(TEXTS, tiny_model.model, tiny_model.tokenizer, max_length=8, device="cpu")
    assert res.n_truncated == 2  # the two texts longer than 8 tokens with [CLS]/[SEP]
    assert "truncated" in caplog.text


def test_quantized_cpu_path_runs(tiny_model) -> None:  # type: ignore[no-untyped-def]
    fp = embed_texts(TEXTS, tiny_model.model, tiny_model.tokenizer, device="cpu").vectors
    q = embed_texts(
        TEXTS, tiny_model.model, tiny_model.tokenizer, device="cpu", quantize=True
    ).vectors
    cos = (fp * q).sum(1) / np.linalg.norm(fp, axis=1) / np.linalg.norm(q, axis=1)
    assert cos.min() > 0.9


@pytest.mark.parametrize("texts", [[], "a string", ["ok", 3]])
def test_bad_texts(tiny_model, texts) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError):
        embed_texts(texts, tiny_model.model, tiny_model.tokenizer, device="cpu")


def test_cache_embeds_each_text_once(tiny_model, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    real = emb.embed_texts

    def counting(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(texts)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(emb, "embed_texts", counting)
    directory = tmp_path / "cache"
    cache = EmbeddingCache(directory)
    assert not directory.exists() and len(cache) == 0  # nothing written before the first embed
    kw = {"device": "cpu", "max_length": 8}
    first = cache.embed(TEXTS + TEXTS[:1], "v1", tiny_model.model, tiny_model.tokenizer, **kw)
    assert sorted(seen) == sorted(TEXTS) and first.n_truncated == 2
    seen.clear()
    # A new process: a fresh cache object on the same directory.
    again = EmbeddingCache(directory).embed(
        [TEXTS[2], "brand new text", TEXTS[0]], "v1", tiny_model.model, tiny_model.tokenizer, **kw
    )
    assert seen == ["brand new text"]
    np.testing.assert_array_equal(again.vectors[0], first.vectors[2])
    np.testing.assert_array_equal(again.vectors[2], first.vectors[0])
    assert again.n_truncated == 1
    direct = embed_texts(
        [TEXTS[2], "brand new text", TEXTS[0]], tiny_model.model, tiny_model.tokenizer, **kw
    )
    np.testing.assert_allclose(again.vectors, direct.vectors, atol=1e-5)
    seen.clear()
    cache.embed(TEXTS[:1], "v2", tiny_model.model, tiny_model.tokenizer, **kw)  # new model version
    cache.embed(
        TEXTS[:1], "v1", tiny_model.model, tiny_model.tokenizer, device="cpu", max_length=16
    )
    assert seen == [TEXTS[0], TEXTS[0]]
    assert len(cache) == 8
    with pytest.raises(InputError):
        cache.embed([], "v1", tiny_model.model, tiny_model.tokenizer)
    with pytest.raises(InputError):
        cache.embed(["x"], "", tiny_model.model, tiny_model.tokenizer)


def test_airline_vs_other_topics_drift(tiny_model, demo_rows) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    airline = [str(r["text"]) for r in demo_rows if r["topic"] == "airline"]
    other = [str(r["text"]) for r in demo_rows if r["topic"] != "airline"]
    pick = lambda pool, n: [pool[i] for i in rng.choice(len(pool), n, replace=False)]  # noqa: E731
    ref_texts, same_texts, other_texts = pick(airline, 700), pick(airline, 200), pick(other, 200)
    ref_texts, same_texts = ref_texts[:500], ref_texts[500:]
    vec = lambda t: embed_texts(t, tiny_model.model, tiny_model.tokenizer, device="cpu").vectors  # noqa: E731
    ref, same, shifted = vec(ref_texts), vec(same_texts), vec(other_texts)
    proj = fit_projection(ref, 10)
    assert embedding_drift(ref, shifted, proj).verdict == "drift"
    assert embedding_drift(ref, same, proj).verdict == "no_drift"


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_model) -> None:  # type: ignore[no-untyped-def]
    cpu = embed_texts(TEXTS, tiny_model.model, tiny_model.tokenizer, device="cpu").vectors
    gpu = embed_texts(TEXTS, tiny_model.model, tiny_model.tokenizer, device="cuda").vectors
    tiny_model.model.cpu()
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.99  # bf16 autocast
