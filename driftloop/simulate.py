"""Replay the demo corpus as production traffic into the prediction log.

Day ``d`` of ``days`` gets ``rows_per_day`` tweets. Before ``shift_start_day`` every row is an
airline tweet (the reference domain); from that day on a ``shift_fraction`` share comes from
the other topics (the drift). A ``label_fraction`` share of rows gets its true label
``label_delay_days`` after the prediction; labels whose delivery time is still in the future
are not delivered yet (a later run delivers them, request ids being the same).

Reference rows (bootstrap training and the drift reference) come from :func:`reference_split`
and are never replayed as production traffic. Everything is deterministic in ``seed``: the
rows of a day and their request ids depend only on ``(seed, day)``, so re-running stores
nothing new (the store counts the rows as duplicates).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress
from rich.table import Table

from driftloop.data import AIRLINE_TOPIC, read_demo_rows
from driftloop.settings import Settings
from monitor.store import PredictionStore

log = logging.getLogger(__name__)

REFERENCE_FRACTION = 0.3
"""Share of the airline tweets held out as reference / bootstrap training data."""
LABEL_SOURCE = "simulated-annotator"


def _unit_hash(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x1f{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reference_split(
    rows: Sequence[dict[str, Any]], seed: int, *, fraction: float = REFERENCE_FRACTION
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split demo rows into reference rows and the production pool, deterministically.

    A row is reference when it is an airline tweet and ``sha256(seed, text)`` maps below
    ``fraction``. Hashing the text (not the position) makes the split independent of row
    order and puts identical texts (retweets) on the same side, so no reference text leaks
    into production. Non-airline rows always go to the production pool.

    Args:
        rows: rows as from :func:`driftloop.data.read_demo_rows` (need ``text`` and ``topic``).
        seed: the split seed (``settings.demo.seed`` by convention).
        fraction: share of airline rows held out as reference.

    Returns:
        ``(reference_rows, production_pool)``, each in the input order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    reference: list[dict[str, Any]] = []
    pool: list[dict[str, Any]] = []
    for row in rows:
        is_ref = row["topic"] == AIRLINE_TOPIC and _unit_hash(str(row["text"]), seed) < fraction
        (reference if is_ref else pool).append(row)
    return reference, pool


@dataclass(frozen=True)
class DaySummary:
    """What one simulated day produced."""

    day: int
    date: str
    rows: int
    shifted: int
    labels: int
    stored: int
    duplicate: int
    quarantined: int

    @property
    def shifted_share(self) -> float:
        """Share of the day's rows from the non-airline topics."""
        return self.shifted / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class SimulationSummary:
    """Per-day counts of a simulation run."""

    model_name: str
    model_version: str
    start: datetime
    days: tuple[DaySummary, ...]

    @property
    def rows(self) -> int:
        """Predictions offered in total."""
        return sum(d.rows for d in self.days)

    @property
    def labels(self) -> int:
        """Labels delivered in total."""
        return sum(d.labels for d in self.days)

    def as_table(self) -> Table:
        """A rich table, one line per day."""
        table = Table(title=f"simulated traffic ({self.model_name} {self.model_version})")
        for column in ("day", "date", "rows", "shifted", "labels", "stored", "duplicate"):
            table.add_column(column, justify="right")
        for d in self.days:
            table.add_row(
                str(d.day),
                d.date,
                str(d.rows),
                f"{d.shifted_share:.0%}",
                str(d.labels),
                str(d.stored),
                str(d.duplicate),
            )
        return table


def _day_rows(
    day: int,
    airline: list[dict[str, Any]],
    other: list[dict[str, Any]],
    settings: Settings,
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """The rows of one day, their offsets within the day (s), and which get a label."""
    demo = settings.demo
    rng = np.random.default_rng([demo.seed, day])
    n = demo.rows_per_day
    shifted = day >= demo.shift_start_day
    n_other = round(n * demo.shift_fraction) if shifted and other else 0
    picks = [
        airline[i]
        for i in rng.choice(len(airline), n - n_other, replace=n - n_other > len(airline))
    ]
    if n_other:
        picks += [other[i] for i in rng.choice(len(other), n_other, replace=n_other > len(other))]
    order = rng.permutation(len(picks))
    picks = [picks[i] for i in order]
    offsets = np.sort(rng.uniform(0, 86_400 - 1, size=len(picks)))
    labelled = rng.random(len(picks)) < demo.label_fraction
    return picks, offsets, labelled


def simulate_traffic(
    settings: Settings,
    store: PredictionStore,
    *,
    model_dir: Path | None = None,
    model: Any = None,
    tokenizer: Any = None,
    model_name: str | None = None,
    model_version: str | None = None,
    days: int | None = None,
    first_day: int = 0,
    start: datetime | None = None,
    progress: bool = True,
) -> SimulationSummary:
    """Replay days ``first_day .. first_day + days - 1`` of demo traffic into the prediction log.

    A day's rows, request ids and timestamps depend only on ``(seed, day)`` and ``start``, so
    the demo can serve one day at a time with whichever model is the champion that day, and a
    re-run stores nothing new.

    Args:
        settings: the settings (``demo``, ``model`` and ``registry`` sections are read).
        store: the prediction log to write to.
        model_dir: a saved classifier, used when ``model``/``tokenizer`` are not given.
        model: a loaded sequence classifier (with ``tokenizer``).
        tokenizer: its tokenizer.
        model_name: logged model name (default ``settings.registry.model_name``).
        model_version: logged version (default the model directory name, or ``"base"``).
        days: number of simulated days (default ``settings.demo.days`` minus ``first_day``).
        first_day: the first day to simulate (day numbers count from ``start``).
        start: midnight-aligned start of day 0 (default: midnight ``max(demo.days,
            first_day + days)`` days before now, so every timestamp is in the past and a
            day's date does not depend on which days one call covers).
        progress: show a rich progress bar.

    Returns:
        Per-day counts.
    """
    from driftloop.models import load_classifier, predict_proba

    demo = settings.demo
    if first_day < 0:
        raise ValueError(f"first_day must be >= 0, got {first_day}")
    n_days = days if days is not None else demo.days - first_day
    if n_days <= 0:
        raise ValueError(f"days must be > 0, got {n_days}")
    day_numbers = range(first_day, first_day + n_days)
    labels = settings.model.labels
    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer, or neither")
    if model is None:
        if model_dir is None and settings.model.base_model is None:
            log.warning(
                "no model given: using the base model, whose classification head is untrained "
                "(predictions are near random; run the bootstrap training first)"
            )
        model, tokenizer = load_classifier(model_dir or settings.model.base_model, labels)
        version = model_version or (model_dir.name if model_dir is not None else "base")
    else:
        version = model_version or "in-memory"
    name = model_name or settings.registry.model_name

    now = datetime.now(UTC)
    if start is None:
        span = max(demo.days, day_numbers.stop)
        start = (now - timedelta(days=span)).replace(hour=0, minute=0, second=0, microsecond=0)
    start = start if start.tzinfo else start.replace(tzinfo=UTC)

    _, pool = reference_split(read_demo_rows(), demo.seed)
    airline = [r for r in pool if r["topic"] == AIRLINE_TOPIC]
    other = [r for r in pool if r["topic"] != AIRLINE_TOPIC]

    summaries: list[DaySummary] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("simulating traffic", total=n_days)
        for day in day_numbers:
            picks, offsets, labelled = _day_rows(day, airline, other, settings)
            texts = [str(r["text"]) for r in picks]
            began = time.perf_counter()
            probs = predict_proba(
                texts,
                model,
                tokenizer,
                batch_size=settings.model.batch_size,
                max_length=settings.model.max_length,
                device=settings.model.device,
            )
            latency = (time.perf_counter() - began) * 1000 / max(len(texts), 1)
            day_start = start + timedelta(days=day)
            pred_rows: list[dict[str, Any]] = []
            label_rows: list[dict[str, Any]] = []
            for i, (row, offset, p) in enumerate(zip(picks, offsets, probs, strict=True)):
                rid = f"sim-{demo.seed}-{day:03d}-{i:05d}"
                ts = day_start + timedelta(seconds=float(offset))
                segments: dict[str, Any] = {"topic": row["topic"]}
                if row["topic"] == AIRLINE_TOPIC and row.get("airline"):
                    segments["airline"] = row["airline"]
                pred_rows.append(
                    {
                        "request_id": rid,
                        "timestamp": ts,
                        "model_name": name,
                        "model_version": version,
                        "text": row["text"],
                        "predicted_label": labels[int(np.argmax(p))],
                        "probabilities": [float(x) for x in p],
                        "segments": segments,
                        "latency_ms": round(latency, 3),
                    }
                )
                label_ts = ts + timedelta(days=demo.label_delay_days)
                if labelled[i] and label_ts <= now:
                    label_rows.append(
                        {
                            "request_id": rid,
                            "label": str(row["label_name"]),
                            "timestamp": label_ts,
                            "source": LABEL_SOURCE,
                        }
                    )
            result = store.log_predictions(pred_rows)
            if result.quarantined:
                log.warning(
                    "day %d: %d rows quarantined: %s", day, result.quarantined, result.reasons
                )
            label_result = store.log_labels(label_rows)
            summaries.append(
                DaySummary(
                    day=day,
                    date=day_start.date().isoformat(),
                    rows=len(pred_rows),
                    shifted=sum(r["topic"] != AIRLINE_TOPIC for r in picks),
                    labels=label_result.stored + label_result.duplicate,
                    stored=result.stored,
                    duplicate=result.duplicate,
                    quarantined=result.quarantined,
                )
            )
            bar.advance(task)
    summary = SimulationSummary(name, version, start, tuple(summaries))
    log.info(
        "simulated day(s) %s: %d predictions, %d labels",
        f"{day_numbers.start}-{day_numbers.stop - 1}" if n_days > 1 else day_numbers.start,
        summary.rows,
        summary.labels,
    )
    return summary
