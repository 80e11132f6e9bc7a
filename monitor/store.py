"""The prediction log: the contract between any serving system and driftloop.

A serving system writes one row per prediction (``predictions``) and, later, the true label
(``labels``) keyed by the same ``request_id``. Every rejected row lands in ``quarantine`` with
its reason; nothing is silently dropped. SQLite (WAL mode) and PostgreSQL behave the same.

Ingest is batched: each batch of ``StoreSettings.batch_size`` rows is one transaction, so a
failure mid-batch leaves nothing of that batch written (earlier batches stay committed).
Re-ingesting the same rows is idempotent: already stored request ids count as ``duplicate``.

Sampling never loads the whole window: every row carries a uniform ``sample_key``, a hash of
its ``request_id`` (:func:`sample_key`), and :meth:`PredictionStore.sample` lets the database
pick the ``n`` rows with the smallest seeded re-key of it (a top-n query), which is a uniform
sample per seed. Because the key is fixed by the request id, the same window gives the same
sample in every store that holds it: re-running a monitor job reproduces its verdict.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from driftloop.settings import LABELS, StoreSettings
from monitor.errors import StoreError

log = logging.getLogger(__name__)

Kind = Literal["predictions", "labels"]
KINDS: tuple[str, ...] = ("predictions", "labels")
SUPPORTED_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".csv", ".parquet")
MAX_ID_CHARS = 255
MAX_NAME_CHARS = 255
WINDOW_COLUMNS: tuple[str, ...] = (
    "request_id",
    "timestamp",
    "model_name",
    "model_version",
    "text",
    "predicted_label",
    "probabilities",
    "segments",
    "latency_ms",
    "label",
    "label_timestamp",
)
_PREDICTION_REQUIRED = (
    "request_id",
    "timestamp",
    "model_name",
    "model_version",
    "text",
    "predicted_label",
    "probabilities",
)
_LABEL_REQUIRED = ("request_id", "label")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_JSON = JSON().with_variant(JSONB(), "postgresql")
_ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(MAX_ID_CHARS), nullable=False, unique=True),
    Column("timestamp", UTCDateTime(), nullable=False, index=True),
    Column("model_name", String(MAX_NAME_CHARS), nullable=False),
    Column("model_version", String(MAX_NAME_CHARS), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("predicted_label", String(MAX_NAME_CHARS), nullable=False),
    Column("probabilities", _JSON, nullable=False),
    Column("segments", _JSON, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("sample_key", Float(precision=53), nullable=False, index=True),
    Column("ingested_at", UTCDateTime(), nullable=False),
)

labels_table = Table(
    "labels",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column(
        "request_id",
        String(MAX_ID_CHARS),
        ForeignKey("predictions.request_id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("label", String(MAX_NAME_CHARS), nullable=False),
    Column("timestamp", UTCDateTime(), nullable=False, index=True),
    Column("source", String(MAX_NAME_CHARS), nullable=True),
    Column("ingested_at", UTCDateTime(), nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("raw", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False, index=True),
)
Index("ix_predictions_version_timestamp", predictions.c.model_version, predictions.c.timestamp)


@dataclass(frozen=True)
class IngestResult:
    """What happened to the rows offered to one ingest call.

    ``offered == stored + duplicate + quarantined`` always.
    """

    offered: int
    stored: int
    duplicate: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: IngestResult) -> IngestResult:
        reasons = dict(self.reasons)
        for reason, count in other.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        return IngestResult(
            self.offered + other.offered,
            self.stored + other.stored,
            self.duplicate + other.duplicate,
            self.quarantined + other.quarantined,
            reasons,
        )


@dataclass(frozen=True)
class _Rejected:
    """A row rejected before validation (undecodable bytes, a line that is not JSON)."""

    raw: Any
    reason: str


class _Invalid(ValueError):
    """One row failed validation; the message is the quarantine reason."""


# --- helpers --------------------------------------------------------------------------------


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime:
    """A datetime or ISO-8601 string as an aware UTC datetime; naive means UTC."""
    if isinstance(value, datetime):
        if value != value:  # pandas.NaT
            raise _Invalid("unparseable timestamp")
        return _as_utc(value.to_pydatetime() if isinstance(value, pd.Timestamp) else value)
    if isinstance(value, np.datetime64):
        return _parse_time(pd.Timestamp(value))
    if isinstance(value, str):
        try:
            return _as_utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise _Invalid("unparseable timestamp") from None
    raise _Invalid("unparseable timestamp")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _clean_str(value: Any, name: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """A required short string field (request_id, model_name, ...), numbers coerced."""
    if isinstance(value, bytes):
        value = _decode(value)
    if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
        raise _Invalid(f"{name} must be a string")
    text = str(value).strip()
    if not text:
        raise _Invalid(f"empty {name}")
    _check_chars(text, name)
    if len(text) > max_chars:
        raise _Invalid(f"{name} longer than {max_chars} characters")
    return text


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("invalid UTF-8") from None


def _check_chars(text: str, name: str) -> None:
    if "\x00" in text:
        raise _Invalid(f"{name} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        raise _Invalid("invalid UTF-8") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def raw_text(raw: Any) -> str:
    """The quarantine form of a raw row: JSON text, else ``repr``; bytes with backslashreplace."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
    try:
        # ensure_ascii escapes NUL and lone surrogates, which PostgreSQL text cannot hold.
        return json.dumps(raw, default=_json_default, ensure_ascii=True)
    except (TypeError, ValueError):
        return repr(raw)


def _json_value(value: Any, name: str) -> Any:
    if isinstance(value, bytes):
        value = _decode(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise _Invalid(f"{name} is not valid JSON") from None
    return value


# --- the store ------------------------------------------------------------------------------


def sample_key(request_id: str) -> float:
    """The row's sampling key in [0, 1): uniform, and fixed by its request id (BLAKE2b)."""
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / 2.0**53  # 53 bits: exact in a double


class PredictionStore:
    """The prediction log on one database; build it with :func:`open_store`."""

    def __init__(
        self, engine: Engine, settings: StoreSettings, labels: Sequence[str] = LABELS
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.labels: tuple[str, ...] = tuple(labels)
        self._label_set = frozenset(self.labels)

    @property
    def safe_url(self) -> str:
        """The database URL with the password masked."""
        return self.engine.url.render_as_string(hide_password=True)

    def create_all(self) -> None:
        """Create the tables and indexes where missing."""
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot create the prediction log at {self.safe_url}: {exc}") from exc

    # --- writing ----------------------------------------------------------------------------

    def log_predictions(self, rows: Iterable[Mapping[str, Any]]) -> IngestResult:
        """Validate and store predictions; bad rows go to quarantine with their reason."""
        return self._ingest("predictions", rows)

    def log_labels(self, rows: Iterable[Mapping[str, Any]]) -> IngestResult:
        """Validate and store true labels for logged predictions (keyed by ``request_id``)."""
        return self._ingest("labels", rows)

    def ingest_file(self, path: Path | str, *, kind: str = "predictions") -> IngestResult:
        """Ingest a ``.jsonl``, ``.csv`` or ``.parquet`` file of predictions or labels.

        Raises:
            StoreError: for a missing file, an unsupported file type or an unknown ``kind``.
        """
        path = Path(path)
        if kind not in KINDS:
            raise StoreError(f"unknown kind {kind!r} (expected predictions or labels)")
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise StoreError(
                f"unsupported file type {suffix or '(none)'!r} for {path.name} "
                f"(expected .jsonl, .csv or .parquet)"
            )
        if not path.is_file():
            raise StoreError(f"file not found: {path}")
        if suffix in (".jsonl", ".ndjson"):
            items = _read_jsonl(path)
        elif suffix == ".csv":
            items = _read_csv(path)
        else:
            items = _read_parquet(path, self.settings.batch_size)
        result = self._ingest(kind, items)  # type: ignore[arg-type]
        log.info(
            "ingested %s (%s): %d offered, %d stored, %d duplicate, %d quarantined",
            path.name,
            kind,
            result.offered,
            result.stored,
            result.duplicate,
            result.quarantined,
        )
        return result

    def _ingest(self, kind: Kind, rows: Iterable[Mapping[str, Any] | _Rejected]) -> IngestResult:
        total = IngestResult(0, 0, 0, 0, {})
        seen: dict[str, str] = {}  # request_id -> fingerprint, across the whole call
        batch: list[Mapping[str, Any] | _Rejected] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= self.settings.batch_size:
                total = total + self._ingest_batch(kind, batch, seen)
                batch = []
        if batch:
            total = total + self._ingest_batch(kind, batch, seen)
        return total

    def _ingest_batch(
        self, kind: Kind, batch: list[Mapping[str, Any] | _Rejected], seen: dict[str, str]
    ) -> IngestResult:
        for attempt in (1, 2):
            try:
                return self._try_batch(kind, batch, dict(seen), seen)
            except IntegrityError as exc:
                # A concurrent writer stored one of these ids between our check and insert:
                # the transaction rolled back, so retry once against the new state.
                if attempt == 2:
                    raise StoreError(f"cannot write {kind} to {self.safe_url}: {exc}") from exc
                log.warning("conflict while writing %s; retrying the batch", kind)
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write {kind} to {self.safe_url}: {exc}") from exc
        raise AssertionError("unreachable")

    def _try_batch(
        self,
        kind: Kind,
        batch: list[Mapping[str, Any] | _Rejected],
        seen_in: dict[str, str],
        seen_out: dict[str, str],
    ) -> IngestResult:
        now = _now()
        valid: list[dict[str, Any]] = []
        bad: list[tuple[Any, str]] = []
        duplicate = 0
        validate = self._validate_prediction if kind == "predictions" else self._validate_label
        for row in batch:
            if isinstance(row, _Rejected):
                bad.append((row.raw, row.reason))
                continue
            try:
                valid.append(validate(row, now))
            except _Invalid as exc:
                bad.append((row, str(exc)))
        with self.engine.begin() as conn:
            fresh: list[dict[str, Any]] = []
            existing = self._existing(conn, kind, [v["request_id"] for v in valid])
            known = (
                self._known_predictions(conn, [v["request_id"] for v in valid])
                if kind == "labels"
                else set()
            )
            for values in valid:
                rid = values["request_id"]
                fingerprint = _fingerprint(values)
                if rid in seen_in:
                    if seen_in[rid] == fingerprint:
                        duplicate += 1
                    else:
                        bad.append((values["_raw"], "request_id repeated with different content"))
                    continue
                if rid in existing:
                    if kind == "labels" and existing[rid] != values["label"]:
                        bad.append(
                            (
                                values["_raw"],
                                f"request_id already labelled {existing[rid]!r}",
                            )
                        )
                    else:
                        duplicate += 1
                    seen_in[rid] = fingerprint
                    continue
                if kind == "labels" and rid not in known:
                    bad.append((values["_raw"], "label for unknown request_id"))
                    continue
                seen_in[rid] = fingerprint
                fresh.append(values)
            rows_out = [{k: v for k, v in values.items() if k != "_raw"} for values in fresh]
            for values in rows_out:
                values["ingested_at"] = now
                if kind == "predictions":
                    values["sample_key"] = sample_key(values["request_id"])
            table = predictions if kind == "predictions" else labels_table
            if rows_out:
                self._insert(conn, table, rows_out)
            if bad:
                self._insert(
                    conn,
                    quarantine,
                    [
                        {"kind": kind, "raw": raw_text(raw), "reason": reason, "received_at": now}
                        for raw, reason in bad
                    ],
                )
        seen_out.clear()
        seen_out.update(seen_in)
        reasons: dict[str, int] = {}
        for _, reason in bad:
            reasons[reason] = reasons.get(reason, 0) + 1
        return IngestResult(len(batch), len(rows_out), duplicate, len(bad), reasons)

    def _insert(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows inside the caller's transaction (a seam tests use to simulate a crash)."""
        conn.execute(table.insert(), rows)

    def _existing(self, conn: Connection, kind: Kind, ids: list[str]) -> dict[str, Any]:
        table = predictions if kind == "predictions" else labels_table
        value = table.c.request_id if kind == "predictions" else labels_table.c.label
        out: dict[str, Any] = {}
        for chunk in _chunks(sorted(set(ids)), 500):
            stmt = select(table.c.request_id, value).where(table.c.request_id.in_(chunk))
            out.update({rid: v for rid, v in conn.execute(stmt)})
        return out

    def _known_predictions(self, conn: Connection, ids: list[str]) -> set[str]:
        return set(self._existing(conn, "predictions", ids))

    def _validate_prediction(self, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise _Invalid("row is not an object")
        for name in _PREDICTION_REQUIRED:
            if _is_missing(row.get(name)):
                raise _Invalid(f"missing field {name}")
        request_id = _clean_str(row["request_id"], "request_id", max_chars=MAX_ID_CHARS)
        timestamp = self._check_time(row["timestamp"], now)
        model_name = _clean_str(row["model_name"], "model_name")
        model_version = _clean_str(row["model_version"], "model_version")
        text = row["text"]
        if isinstance(text, bytes):
            text = _decode(text)
        if not isinstance(text, str):
            raise _Invalid("text must be a string")
        _check_chars(text, "text")
        if not text.strip():
            raise _Invalid("empty text")
        if len(text) > self.settings.max_text_chars:
            raise _Invalid(f"text longer than {self.settings.max_text_chars} characters")
        predicted = row["predicted_label"]
        if isinstance(predicted, bytes):
            predicted = _decode(predicted)
        if predicted not in self._label_set:
            raise _Invalid(f"unknown label {_short(predicted)} (known: {', '.join(self.labels)})")
        probabilities = self._check_probabilities(row["probabilities"])
        segments = self._check_segments(row.get("segments"))
        latency = row.get("latency_ms")
        if _is_missing(latency) or latency == "":
            latency_ms = None
        else:
            try:
                latency_ms = float(latency)
            except (TypeError, ValueError):
                raise _Invalid("latency_ms is not a number") from None
            if not math.isfinite(latency_ms) or latency_ms < 0:
                raise _Invalid("latency_ms must be a finite number >= 0")
        return {
            "_raw": row,
            "request_id": request_id,
            "timestamp": timestamp,
            "model_name": model_name,
            "model_version": model_version,
            "text": text,
            "predicted_label": predicted,
            "probabilities": probabilities,
            "segments": segments,
            "latency_ms": latency_ms,
        }

    def _validate_label(self, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise _Invalid("row is not an object")
        for name in _LABEL_REQUIRED:
            if _is_missing(row.get(name)):
                raise _Invalid(f"missing field {name}")
        request_id = _clean_str(row["request_id"], "request_id", max_chars=MAX_ID_CHARS)
        label = row["label"]
        if isinstance(label, bytes):
            label = _decode(label)
        if label not in self._label_set:
            raise _Invalid(f"unknown label {_short(label)} (known: {', '.join(self.labels)})")
        raw_time = row.get("timestamp")
        timestamp = (
            now if _is_missing(raw_time) or raw_time == "" else self._check_time(raw_time, now)
        )
        source = row.get("source")
        source = None if _is_missing(source) or source == "" else _clean_str(source, "source")
        return {
            "_raw": row,
            "request_id": request_id,
            "label": label,
            "timestamp": timestamp,
            "source": source,
        }

    def _check_time(self, value: Any, now: datetime) -> datetime:
        timestamp = _parse_time(value)
        if timestamp > now + timedelta(seconds=self.settings.future_tolerance_s):
            raise _Invalid("timestamp in the future")
        return timestamp

    def _check_probabilities(self, value: Any) -> list[float]:
        value = _json_value(value, "probabilities")
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise _Invalid("probabilities must be a list")
        if len(value) != len(self.labels):
            raise _Invalid(f"expected {len(self.labels)} probabilities, got {len(value)}")
        out: list[float] = []
        for p in value:
            if isinstance(p, bool) or not isinstance(p, int | float | np.number):
                raise _Invalid("probabilities contain a non-number")
            out.append(float(p))
        if any(math.isnan(p) for p in out):
            raise _Invalid("probabilities contain NaN")
        if any(math.isinf(p) for p in out):
            raise _Invalid("probabilities contain infinity")
        if any(p < 0 for p in out):
            raise _Invalid("negative probability")
        total = math.fsum(out)
        tolerance = self.settings.probability_tolerance
        if abs(total - 1.0) > tolerance:
            raise _Invalid(f"probabilities sum to {total:.4g}, not 1 (tolerance {tolerance:g})")
        return out

    def _check_segments(self, value: Any) -> dict[str, Any] | None:
        if _is_missing(value) or value == "":
            return None
        value = _json_value(value, "segments")
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _Invalid("segments must be a JSON object")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid("segments keys must be strings")
            _check_chars(key, "segments")
            if isinstance(item, np.generic):
                item = item.item()
            if item is not None and not isinstance(item, str | int | float | bool):
                raise _Invalid(f"segment {_short(key)} must be a string, number or null")
            if isinstance(item, str):
                _check_chars(item, "segments")
            if isinstance(item, float) and not math.isfinite(item):
                raise _Invalid(f"segment {_short(key)} is not finite")
            out[key] = item
        return out

    # --- reading ----------------------------------------------------------------------------

    def _where(
        self, start: datetime, end: datetime, model_version: str | None
    ) -> ColumnElement[bool]:
        clauses = [
            predictions.c.timestamp >= _parse_bound(start),
            predictions.c.timestamp < _parse_bound(end),
        ]
        if model_version is not None:
            clauses.append(predictions.c.model_version == model_version)
        return and_(*clauses)

    def _select(self, *, inner: bool = False) -> Any:
        columns = [
            predictions.c.request_id,
            predictions.c.timestamp,
            predictions.c.model_name,
            predictions.c.model_version,
            predictions.c.text,
            predictions.c.predicted_label,
            predictions.c.probabilities,
            predictions.c.segments,
            predictions.c.latency_ms,
            labels_table.c.label,
            labels_table.c.timestamp.label("label_timestamp"),
        ]
        joined = predictions.join(
            labels_table,
            labels_table.c.request_id == predictions.c.request_id,
            isouter=not inner,
        )
        return select(*columns).select_from(joined)

    def _frame(self, stmt: Any) -> pd.DataFrame:
        try:
            with self.engine.connect() as conn:
                records = [tuple(r) for r in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the prediction log at {self.safe_url}: {exc}") from exc
        return _to_frame(records)

    def window(
        self, start: datetime, end: datetime, *, model_version: str | None = None
    ) -> pd.DataFrame:
        """Every prediction with ``start <= timestamp < end``, with its label where known."""
        stmt = (
            self._select()
            .where(self._where(start, end, model_version))
            .order_by(predictions.c.timestamp, predictions.c.id)
        )
        return self._frame(stmt)

    def labelled(
        self,
        start: datetime,
        end: datetime,
        *,
        model_version: str | None = None,
        as_of: datetime | str | None = None,
    ) -> pd.DataFrame:
        """Predictions in the window (by prediction time) that have a true label.

        Args:
            start: first prediction time (inclusive).
            end: last prediction time (exclusive).
            model_version: only predictions of this model version.
            as_of: only labels whose label timestamp is ``<= as_of`` count (labels arrive
                late: a replay of a past window must not see labels that arrived after it).
                None: every label known now.
        """
        where = self._where(start, end, model_version)
        if as_of is not None:
            where = and_(where, labels_table.c.timestamp <= _parse_bound(as_of))
        stmt = (
            self._select(inner=True)
            .where(where)
            .order_by(predictions.c.timestamp, predictions.c.id)
        )
        return self._frame(stmt)

    def count(self, start: datetime, end: datetime, *, model_version: str | None = None) -> int:
        """Number of predictions in the window."""
        stmt = (
            select(func.count())
            .select_from(predictions)
            .where(self._where(start, end, model_version))
        )
        return int(self._scalar(stmt) or 0)

    def sample(
        self,
        start: datetime,
        end: datetime,
        n: int,
        *,
        model_version: str | None = None,
        stratify_by: str | None = None,
        seed: int = 0,
    ) -> pd.DataFrame:
        """A uniform random sample of ``n`` predictions of the window (all of them if fewer).

        The database orders the window by a seeded re-key of each row's ``sample_key``
        (the fractional part of ``sample_key * m + u`` for a large seeded ``m``) and returns
        the first ``n``: a top-n query, so memory stays O(n) however large the window.
        ``stratify_by`` names a segment key; each of its values (missing is its own stratum)
        gets a share of ``n`` proportional to its count (largest remainder).
        """
        if n < 0:
            raise StoreError(f"sample size must be >= 0, got {n}")
        where = self._where(start, end, model_version)
        if stratify_by is None:
            frames = [self._sample_where(where, n, seed)]
        else:
            frames = []
            for stratum, quota in self._allocate(where, stratify_by, n).items():
                if quota:
                    frames.append(
                        self._sample_where(
                            and_(where, self._segment_is(stratify_by, stratum)), quota, seed
                        )
                    )
        frames = [f for f in frames if len(f)]
        if not frames:
            return _to_frame([])
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _rekey(self, seed: int) -> ColumnElement[float]:
        rng = np.random.default_rng(seed)
        multiplier = float(rng.integers(1 << 16, 1 << 22))
        offset = float(rng.random())
        x = predictions.c.sample_key * multiplier + offset
        if self.engine.dialect.name == "sqlite":
            return x - func.cast(x, Integer)  # x >= 0, so truncation is floor
        return x - func.floor(x)

    def _sample_where(self, where: ColumnElement[bool], n: int, seed: int) -> pd.DataFrame:
        if n == 0:
            return _to_frame([])
        stmt = self._select().where(where).order_by(self._rekey(seed), predictions.c.id).limit(n)
        return self._frame(stmt)

    def _segment_value(self, key: str) -> ColumnElement[str]:
        return predictions.c.segments[key].as_string()

    def _segment_is(self, key: str, value: str | None) -> ColumnElement[bool]:
        column = self._segment_value(key)
        return column.is_(None) if value is None else column == value

    def _allocate(self, where: ColumnElement[bool], key: str, n: int) -> dict[str | None, int]:
        column = self._segment_value(key)
        stmt = select(column, func.count()).where(where).group_by(column)
        try:
            with self.engine.connect() as conn:
                counts = {value: int(c) for value, c in conn.execute(stmt)}
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the prediction log at {self.safe_url}: {exc}") from exc
        return allocate_proportional(counts, n)

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """Earliest and latest prediction timestamp, or None when the log is empty."""
        stmt = select(func.min(predictions.c.timestamp), func.max(predictions.c.timestamp))
        try:
            with self.engine.connect() as conn:
                low, high = conn.execute(stmt).one()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the prediction log at {self.safe_url}: {exc}") from exc
        if low is None:
            return None
        # Aggregates lose the column type on SQLite; parse them back to aware UTC.
        return _parse_time(low), _parse_time(high)

    def counts(self) -> dict[str, int]:
        """Row counts of the three tables."""
        out = {}
        for name, table in (
            ("predictions", predictions),
            ("labels", labels_table),
            ("quarantine", quarantine),
        ):
            out[name] = int(self._scalar(select(func.count()).select_from(table)) or 0)
        return out

    def quarantined(self, *, limit: int = 100) -> pd.DataFrame:
        """The most recent quarantined rows (kind, raw, reason, received_at)."""
        stmt = (
            select(
                quarantine.c.kind, quarantine.c.raw, quarantine.c.reason, quarantine.c.received_at
            )
            .order_by(quarantine.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            records = [tuple(r) for r in conn.execute(stmt)]
        return pd.DataFrame(records, columns=["kind", "raw", "reason", "received_at"])

    def _scalar(self, stmt: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).scalar()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the prediction log at {self.safe_url}: {exc}") from exc


def allocate_proportional(counts: Mapping[Any, int], n: int) -> dict[Any, int]:
    """Split ``n`` over strata proportionally to ``counts`` (largest remainder, capped)."""
    total = sum(counts.values())
    if total <= n:
        return dict(counts)
    exact = {k: n * c / total for k, c in counts.items()}
    quota = {k: math.floor(v) for k, v in exact.items()}
    left = n - sum(quota.values())
    order = sorted(counts, key=lambda k: (-(exact[k] - quota[k]), str(k)))
    for key in order[:left]:
        quota[key] += 1
    return quota


def _parse_bound(value: datetime | str) -> datetime:
    try:
        return _parse_time(value)
    except _Invalid as exc:
        raise StoreError(f"invalid window bound {value!r}") from exc


def _fingerprint(values: Mapping[str, Any]) -> str:
    content = {k: v for k, v in values.items() if k != "_raw"}
    return json.dumps(content, sort_keys=True, default=str)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_frame(records: list[tuple[Any, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(WINDOW_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["label_timestamp"] = pd.to_datetime(frame["label_timestamp"], utc=True)
    frame["segments"] = [s if isinstance(s, dict) else {} for s in frame["segments"]]
    frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
    frame["latency_ms"] = frame["latency_ms"].astype(float)
    return frame


# --- file readers (yield rows, or _Rejected for what cannot even be parsed) ----------------


def _read_jsonl(path: Path) -> Iterator[Mapping[str, Any] | _Rejected]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                yield _Rejected(line, "invalid UTF-8")
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield _Rejected(line, f"invalid JSON on line {number}: {exc.msg}")
                continue
            if not isinstance(value, dict):
                yield _Rejected(line, "JSON line is not an object")
                continue
            yield value


def _read_csv(path: Path) -> Iterator[Mapping[str, Any] | _Rejected]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            fixed: dict[str, Any] = {}
            bad_utf8 = False
            for key, value in row.items():
                if isinstance(value, str):
                    try:
                        value.encode("utf-8")
                    except UnicodeEncodeError:
                        bad_utf8 = True
                        value = value.encode("utf-8", "surrogateescape").decode(
                            "utf-8", "backslashreplace"
                        )
                fixed[str(key)] = None if value == "" else value
            if bad_utf8:
                yield _Rejected(fixed, "invalid UTF-8")
            else:
                yield fixed


def _read_parquet(path: Path, batch_size: int) -> Iterator[Mapping[str, Any] | _Rejected]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise StoreError(f"cannot read parquet file {path}: {exc}") from exc
    for record_batch in parquet.iter_batches(batch_size=batch_size):
        yield from record_batch.to_pylist()


# --- opening --------------------------------------------------------------------------------


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_store(
    settings: StoreSettings, *, labels: Sequence[str] = LABELS, create: bool = False
) -> PredictionStore:
    """Connect to the prediction log; ``create=True`` makes the directory and tables.

    Raises:
        StoreError: if the database cannot be reached, or (without ``create``) does not exist
            or has no prediction-log tables.
    """
    try:
        url = make_url(settings.url)
    except Exception as exc:
        raise StoreError(f"invalid store URL: {exc}") from exc
    safe = url.render_as_string(hide_password=True)
    kwargs: dict[str, Any] = {"future": True}
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory:
            db_path = Path(database)
            if create:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            elif not db_path.is_file():
                raise StoreError(
                    f"no prediction log at {safe} (run `driftloop init` or open with create=True)"
                )
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # missing driver, bad arguments
        raise StoreError(f"cannot open the prediction log at {safe}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    store = PredictionStore(engine, settings, labels)
    try:
        with engine.connect() as conn:
            conn.execute(select(1))
            has_tables = inspect(conn).has_table("predictions")
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot reach the prediction log at {safe}: {exc}") from exc
    if create:
        store.create_all()
    elif not has_tables:
        raise StoreError(f"the prediction log at {safe} has no tables (run `driftloop init`)")
    return store


def new_request_id() -> str:
    """A fresh random request id (for serving systems that have none)."""
    return uuid.uuid4().hex
