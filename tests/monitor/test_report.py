"""Tests of monitor.report: the Evidently report, the verdict JSON, escaping of production text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.errors import InputError
from monitor.report import text_descriptors, write_report
from monitor.verdict import build_verdict

PAYLOAD = "<script>alert(1)</script>"
BREAKOUT = '</script><img src=x onerror="alert(2)">'


@dataclass(frozen=True)
class _Check:
    name: str
    p_value: float | None
    alert: bool
    insufficient_data: bool = False

    def evidence(self) -> dict[str, float | int | str]:
        return {"note": PAYLOAD, "p": self.p_value or 0.0}


def _frame(rows: list[dict[str, object]], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([2, 1, 1], len(rows))
    return pd.DataFrame(
        {
            "text": [str(r["text"]) for r in rows],
            "predicted_label": [["negative", "neutral", "positive"][i] for i in probs.argmax(1)],
            "probabilities": list(probs),
            "label": [int(r["label"]) for r in rows],  # type: ignore[call-overload]
        }
    )


def test_text_descriptors() -> None:
    out = text_descriptors(pd.Series(["Hello world!!", "", "zzz"]), {"hello", "world"})
    assert out.loc[0, "word_count"] == 2 and out.loc[0, "oov_share"] == 0.0
    assert out.loc[0, "non_letter_share"] == pytest.approx(2 / 12)
    assert out.loc[1, "text_length"] == 0 and out.loc[2, "oov_share"] == 1.0


def test_write_report_escapes_production_text(
    tmp_path: Path, demo_rows: list[dict[str, object]]
) -> None:
    air = [r for r in demo_rows if r["topic"] == "airline"][:200]
    other = [r for r in demo_rows if r["topic"] != "airline"][:200]
    reference, current = _frame(air, 0), _frame(other, 1)
    current.loc[:9, "text"] = [PAYLOAD, BREAKOUT] * 5
    rng = np.random.default_rng(0)
    ref_emb = rng.normal(0, 1, (200, 16))
    cur_emb = rng.normal(0.5, 1, (200, 16))
    verdict = build_verdict([_Check("drift", 0.001, True), _Check("decay", None, False, True)])
    paths = write_report(
        reference,
        current,
        verdict,
        tmp_path / "out",
        reference_embeddings=ref_emb,
        current_embeddings=cur_emb,
        title=f"window {PAYLOAD}",
    )
    for path in (paths.html, paths.summary_html):
        text = path.read_text(encoding="utf-8")
        assert PAYLOAD not in text and BREAKOUT not in text
        assert "</script><img" not in text
    evidently_html = paths.html.read_text(encoding="utf-8")
    # Raw text never reaches Evidently at all (not even escaped); only numbers do.
    assert "alert(1)" not in evidently_html and "alert(2)" not in evidently_html
    for column in ("oov_share", "text_length", "embedding_pc1", "max_probability"):
        assert column in evidently_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in paths.summary_html.read_text("utf-8")
    data = json.loads(paths.json.read_text("utf-8"))
    assert data["status"] == "breach" and data["insufficient"] == ["decay"]


def test_write_report_without_embeddings_or_probabilities(
    tmp_path: Path, demo_rows: list[dict[str, object]]
) -> None:
    rows = demo_rows[:100]
    ref = _frame(rows, 0).drop(columns=["probabilities"])
    cur = _frame(demo_rows[100:200], 1).drop(columns=["probabilities"])
    verdict = build_verdict([_Check("drift", 0.5, False)])
    paths = write_report(ref, cur, verdict, tmp_path)
    assert paths.html.stat().st_size > 0 and paths.json.is_file()
    # Empty embedding arrays (what the flow passes for an unembedded window) mean "none".
    empty = np.empty((0, 0))
    paths = write_report(
        ref, cur, verdict, tmp_path, reference_embeddings=empty, current_embeddings=empty
    )
    assert paths.html.stat().st_size > 0 and paths.json.is_file()


def test_write_report_bad_input(tmp_path: Path) -> None:
    verdict = build_verdict([_Check("drift", 0.5, False)])
    good = pd.DataFrame({"text": ["a b", "c"], "predicted_label": ["neutral", "positive"]})
    with pytest.raises(InputError):
        write_report(good.drop(columns=["text"]), good, verdict, tmp_path)
    with pytest.raises(InputError):
        write_report(good.iloc[:0], good, verdict, tmp_path)
    with pytest.raises(InputError):
        write_report(good, good, verdict, tmp_path, reference_embeddings=np.zeros((2, 3)))
    with pytest.raises(InputError):
        write_report(
            good,
            good,
            verdict,
            tmp_path,
            reference_embeddings=np.zeros((2, 3)),
            current_embeddings=np.zeros((3, 3)),
        )
