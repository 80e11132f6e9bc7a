"""Training-set assembly: labelled production rows, a replay sample, a held-out split of new data.

Bad input is refused here, before anything is trained: no labelled rows, fewer than
``min_rows`` after deduplication, a single class, or labels outside the model's label set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from driftloop.settings import RetrainSettings
from retrain.errors import TrainingDataError

if TYPE_CHECKING:
    import datasets
    import pandas as pd

log = logging.getLogger(__name__)

#: Columns of every assembled split.
COLUMNS = ("text", "label", "source", "topic", "airline")


@dataclass(frozen=True)
class TrainingSet:
    """Train and held-out splits (``datasets.Dataset``) and how they were built."""

    train: datasets.Dataset
    holdout: datasets.Dataset
    counts: dict[str, int] = field(default_factory=dict)


def _label_ids(values: pd.Series, labels: Sequence[str]) -> np.ndarray:
    """Map label names (or integer ids) to ids; refuse anything outside the label set."""
    import pandas as pd

    index = {name: i for i, name in enumerate(labels)}
    if pd.api.types.is_numeric_dtype(values):
        ids = values.to_numpy()
        bad = sorted({int(v) for v in ids if not (float(v).is_integer() and 0 <= v < len(labels))})
        if bad:
            raise TrainingDataError(f"label ids outside 0..{len(labels) - 1}: {bad[:10]}")
        return ids.astype(np.int64)
    names = values.astype(str).str.strip()
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise TrainingDataError(
            f"labels outside the model's label set {list(labels)}: {unknown[:10]}"
        )
    return names.map(index).to_numpy(dtype=np.int64)


def _segment(segments: Any, key: str) -> str | None:
    if isinstance(segments, Mapping):
        value = segments.get(key)
        return None if value is None else str(value)
    return None


def _string_column(frame: pd.DataFrame, name: str) -> pd.Series:
    import pandas as pd

    # A typed all-missing column, not None: concat with an untyped all-NA column is deprecated.
    if name in frame:
        return frame[name].astype("string")
    return pd.Series(pd.NA, index=frame.index, dtype="string")


def _reference_frame(
    reference: pd.DataFrame | datasets.Dataset, labels: Sequence[str]
) -> pd.DataFrame:
    import pandas as pd

    frame = reference if isinstance(reference, pd.DataFrame) else reference.to_pandas()
    if "text" not in frame or "label" not in frame:
        raise TrainingDataError("the replay/reference data needs 'text' and 'label' columns")
    out = pd.DataFrame(
        {
            "text": frame["text"].astype(str),
            "label": _label_ids(frame["label"], labels),
            "source": "replay",
            "topic": _string_column(frame, "topic"),
            "airline": _string_column(frame, "airline"),
        }
    )
    return out.drop_duplicates("text")


def _to_dataset(frame: pd.DataFrame, labels: Sequence[str]) -> datasets.Dataset:
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(labels)),
            "source": datasets.Value("string"),
            "topic": datasets.Value("string"),
            "airline": datasets.Value("string"),
        }
    )
    records = frame.loc[:, list(COLUMNS)].astype(object).where(frame.notna(), None)
    return datasets.Dataset.from_pandas(records, features=features, preserve_index=False)


def assemble_training_set(
    labelled: pd.DataFrame,
    reference: pd.DataFrame | datasets.Dataset,
    *,
    settings: RetrainSettings,
    labels: Sequence[str],
) -> TrainingSet:
    """Build the train and held-out splits for an incremental retrain.

    Args:
        labelled: labelled production rows (``store.labelled(...)``): request_id, text, label,
            optionally timestamp, label_timestamp and segments.
        reference: the champion's training data to replay (text, label, optional topic/airline).
        settings: min_rows, replay_ratio, holdout_fraction, max_train_rows, seed.
        labels: the model's label names; ``label`` may hold names or integer ids.

    Returns:
        Train = new rows outside the holdout + ``replay_ratio`` replay rows per new row;
        holdout = ``holdout_fraction`` of the NEW rows only (stratified when possible).

    Raises:
        TrainingDataError: no labelled rows, too few rows, a single class or unknown labels.
    """
    import pandas as pd

    if labelled is None or len(labelled) == 0:
        raise TrainingDataError("no labelled production rows in the window: nothing to train on")
    missing = {"text", "label"} - set(labelled.columns)
    if missing:
        raise TrainingDataError(f"labelled rows lack columns {sorted(missing)}")
    frame = labelled[labelled["label"].notna()].copy()
    if frame.empty:
        raise TrainingDataError("no labelled production rows in the window: nothing to train on")
    received = len(frame)

    # Deduplicate: the latest label of a request wins, then one row per distinct text.
    order = [c for c in ("label_timestamp", "timestamp") if c in frame.columns]
    if order:
        frame = frame.sort_values(order, kind="stable")
    if "request_id" in frame.columns:
        frame = frame.drop_duplicates("request_id", keep="last")
    frame["text"] = frame["text"].astype(str)
    frame = frame.drop_duplicates("text", keep="last")
    duplicates = received - len(frame)

    ids = _label_ids(frame["label"], labels)
    segments = frame["segments"] if "segments" in frame.columns else pd.Series([None] * len(frame))
    new = pd.DataFrame(
        {
            "text": frame["text"].to_numpy(),
            "label": ids,
            "source": "new",
            "topic": pd.Series([_segment(s, "topic") for s in segments], dtype="string"),
            "airline": pd.Series([_segment(s, "airline") for s in segments], dtype="string"),
        }
    )
    if len(new) < settings.min_rows:
        raise TrainingDataError(
            f"{len(new)} distinct labelled rows, fewer than retrain.min_rows={settings.min_rows}"
        )
    classes = np.unique(new["label"])
    if len(classes) < 2:
        raise TrainingDataError(
            f"all {len(new)} labelled rows are of one class ({labels[int(classes[0])]!r}): "
            "a classifier cannot be retrained on that"
        )

    # Held-out split of the new data only, stratified by label where every class has >= 2 rows.
    rng = np.random.default_rng(settings.seed)
    holdout_idx: list[int] = []
    for label_id in classes:
        members = np.flatnonzero(new["label"].to_numpy() == label_id)
        rng.shuffle(members)
        take = round(len(members) * settings.holdout_fraction)
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        holdout_idx.extend(members[:take].tolist())
    is_holdout = np.zeros(len(new), dtype=bool)
    is_holdout[holdout_idx] = True
    holdout = new[is_holdout].reset_index(drop=True)
    new_train = new[~is_holdout]
    cap_new = max(1, int(settings.max_train_rows / (1.0 + settings.replay_ratio)))
    if len(new_train) > cap_new:
        new_train = new_train.sample(n=cap_new, random_state=settings.seed)

    # Replay: a sample of the champion's training data, never a text of the new data.
    ref = _reference_frame(reference, labels)
    ref = ref[~ref["text"].isin(set(new["text"]))]
    n_replay = min(len(ref), round(settings.replay_ratio * len(new_train)))
    replay = ref.sample(n=n_replay, random_state=settings.seed) if n_replay else ref.iloc[:0]
    train = (
        pd.concat([new_train, replay], ignore_index=True)
        .sample(frac=1.0, random_state=settings.seed)
        .reset_index(drop=True)
    )

    counts = {
        "labelled_rows": received,
        "duplicates_dropped": duplicates,
        "new_rows": len(new),
        "new_train": len(new_train),
        "holdout": len(holdout),
        "replay": len(replay),
        "train": len(train),
        **{f"train_{labels[i]}": int((train["label"] == i).sum()) for i in range(len(labels))},
    }
    log.info("assembled training set: %s", counts)
    return TrainingSet(
        train=_to_dataset(train, labels), holdout=_to_dataset(holdout, labels), counts=counts
    )
