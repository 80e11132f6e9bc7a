"""The report of one monitoring window: an Evidently 0.7 HTML report plus driftloop's verdict.

Written to ``out_dir``:

* ``report.html`` - Evidently ``DataDriftPreset`` over numbers computed here: text descriptors
  (characters, words, out-of-vocabulary share against the reference vocabulary, non-letter
  share), the top-class probability, the predicted label, and the first principal components
  of the embeddings (PCA fitted on the reference).
* ``verdict.json`` - :meth:`MonitorVerdict.to_json`.
* ``summary.html`` - a small driftloop table of the verdict, every value ``html.escape``-d.

Security decision: production text never reaches Evidently. Evidently embeds its data in a JSON
blob inside a ``<script>`` tag; a tweet containing ``</script>`` could break out of it. So the
descriptors are computed here and only numbers (and the model's own label names) are passed
on; the raw ``text`` column is dropped before Evidently sees the frame.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitor.errors import InputError
from monitor.verdict import MonitorVerdict

logger = logging.getLogger(__name__)

__all__ = ["ReportPaths", "text_descriptors", "write_report"]

_WORD_RE = re.compile(r"[a-z']+")
_MAX_PCA_COMPONENTS = 5
DESCRIPTOR_COLUMNS: tuple[str, ...] = ("text_length", "word_count", "oov_share", "non_letter_share")


@dataclass(frozen=True)
class ReportPaths:
    """Files written by :func:`write_report`."""

    html: Path
    json: Path
    summary_html: Path


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def text_descriptors(texts: pd.Series, vocabulary: set[str]) -> pd.DataFrame:
    """Numeric descriptors of each text (length, words, OOV share vs ``vocabulary``, non-letters)."""
    rows = []
    for text in texts.astype(str):
        words = _words(text)
        letters = sum(ch.isalpha() for ch in text)
        visible = sum(not ch.isspace() for ch in text)
        rows.append(
            {
                "text_length": len(text),
                "word_count": len(words),
                "oov_share": (sum(w not in vocabulary for w in words) / len(words))
                if words
                else 0.0,
                "non_letter_share": ((visible - letters) / visible) if visible else 0.0,
            }
        )
    return pd.DataFrame(rows, index=texts.index, columns=list(DESCRIPTOR_COLUMNS))


def _check_frame(frame: pd.DataFrame, what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame")
    missing = {"text", "predicted_label"} - set(frame.columns)
    if missing:
        raise InputError(f"{what} lacks columns {sorted(missing)}")
    if len(frame) == 0:
        raise InputError(f"{what} is empty")


def _max_probability(frame: pd.DataFrame, what: str) -> np.ndarray | None:
    if "probabilities" not in frame.columns:
        return None
    try:
        probs = np.vstack([np.asarray(p, dtype=float) for p in frame["probabilities"]])
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what}.probabilities must be equal-length number lists: {exc}") from exc
    if not np.all(np.isfinite(probs)):
        raise InputError(f"{what}.probabilities contains NaN or inf")
    return probs.max(axis=1)


def _numeric_frame(
    frame: pd.DataFrame, vocabulary: set[str], embeddings: np.ndarray | None, pca: Any, what: str
) -> pd.DataFrame:
    out = text_descriptors(frame["text"], vocabulary).reset_index(drop=True)
    out["predicted_label"] = frame["predicted_label"].astype(str).to_numpy()
    max_prob = _max_probability(frame, what)
    if max_prob is not None:
        out["max_probability"] = max_prob
    if embeddings is not None and pca is not None:
        comps = pca.transform(embeddings)
        for i in range(comps.shape[1]):
            out[f"embedding_pc{i + 1}"] = comps[:, i]
    return out


def _check_embeddings(emb: np.ndarray | None, rows: int, what: str) -> np.ndarray | None:
    if emb is None:
        return None
    arr = np.asarray(emb, dtype=float)
    if arr.size == 0:
        return None  # an empty array means "no embeddings" (a window too small to embed)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise InputError(f"{what} must be (rows={rows}, dims), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or inf")
    return arr


def _summary_html(verdict: MonitorVerdict, title: str) -> str:
    esc = html.escape
    data = verdict.to_dict()
    rows = []
    for check in data["checks"]:
        evidence = ", ".join(f"{k}={v}" for k, v in check["evidence"].items())
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{esc(str(x))}</td>"
                for x in (
                    check["name"],
                    check["decision"],
                    check["p_value"],
                    check["adjusted_p_value"],
                    evidence,
                )
            )
            + "</tr>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title></head><body>"
        f"<h1>{esc(title)}</h1>"
        f"<p>Status: <b>{esc(data['status'])}</b> ({esc(data['method'])} at alpha "
        f"{esc(str(data['alpha']))}); created {esc(data['created_at'])}</p>"
        "<table border='1'><tr><th>check</th><th>decision</th><th>p</th><th>adjusted p</th>"
        "<th>evidence</th></tr>" + "".join(rows) + "</table></body></html>"
    )


def write_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    verdict: MonitorVerdict,
    out_dir: Path,
    *,
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
    title: str = "driftloop monitoring report",
) -> ReportPaths:
    """Write the Evidently HTML report, the verdict JSON and a verdict summary HTML.

    Args:
        reference: Reference rows: ``text``, ``predicted_label``, optionally ``probabilities``
            (one list per row) and ``label``.
        current: The monitored window, same columns.
        verdict: The run's verdict (written as JSON next to the report).
        out_dir: Folder to write into (created if missing).
        reference_embeddings: Embeddings of the reference rows, shape (rows, dims).
        current_embeddings: Embeddings of the current rows, same dims.
        title: Title of the summary page.

    Raises:
        InputError: on missing columns, empty frames or mismatched embeddings.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    from sklearn.decomposition import PCA

    _check_frame(reference, "reference")
    _check_frame(current, "current")
    ref_emb = _check_embeddings(reference_embeddings, len(reference), "reference_embeddings")
    cur_emb = _check_embeddings(current_embeddings, len(current), "current_embeddings")
    if (ref_emb is None) != (cur_emb is None):
        raise InputError("pass embeddings for both reference and current, or for neither")
    pca = None
    if ref_emb is not None and cur_emb is not None:
        if ref_emb.shape[1] != cur_emb.shape[1]:
            raise InputError(f"embedding dims differ: {ref_emb.shape[1]} vs {cur_emb.shape[1]}")
        n_comp = min(_MAX_PCA_COMPONENTS, ref_emb.shape[1], len(ref_emb) - 1)
        if n_comp >= 1:
            pca = PCA(n_components=n_comp, random_state=0).fit(ref_emb)

    vocabulary = {w for text in reference["text"].astype(str) for w in _words(text)}
    ref_num = _numeric_frame(reference, vocabulary, ref_emb, pca, "reference")
    cur_num = _numeric_frame(current, vocabulary, cur_emb, pca, "current")
    if list(ref_num.columns) != list(cur_num.columns):
        raise InputError("reference and current must have the same optional columns")
    numerical = [c for c in ref_num.columns if c != "predicted_label"]
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=["predicted_label"]
    )
    report = Report([DataDriftPreset()])
    snapshot = report.run(
        Dataset.from_pandas(cur_num, data_definition=definition),
        Dataset.from_pandas(ref_num, data_definition=definition),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        html=out_dir / "report.html",
        json=out_dir / "verdict.json",
        summary_html=out_dir / "summary.html",
    )
    snapshot.save_html(str(paths.html))
    paths.json.write_text(verdict.to_json(), encoding="utf-8")
    paths.summary_html.write_text(_summary_html(verdict, title), encoding="utf-8")
    logger.info("report written to %s", out_dir)
    return paths
