"""The one typed settings object, read from ``driftloop.toml`` and ``DRIFTLOOP_*`` variables.

Build it once at the entry point with :func:`load_settings` and pass it (or one of its
sections) down. Nothing here touches the file system or global state at import time.

Precedence, highest first: keyword overrides, ``DRIFTLOOP_*`` environment variables
(nested with ``__``, e.g. ``DRIFTLOOP_DRIFT__ALPHA=0.01``), the TOML file, the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("driftloop.toml")
LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    """The prediction log."""

    url: str = Field(
        "sqlite:///.driftloop/driftloop.db",
        description="SQLAlchemy URL of the prediction log (SQLite or PostgreSQL).",
    )
    max_text_chars: int = Field(10_000, gt=0, description="Longer inputs are quarantined.")
    probability_tolerance: float = Field(1e-3, gt=0, description="Allowed |sum(p) - 1|.")
    future_tolerance_s: float = Field(300.0, ge=0, description="Clock skew allowed for timestamps.")
    batch_size: int = Field(5_000, gt=0, description="Rows per database transaction on ingest.")


class ModelSettings(_Section):
    """The monitored classifier and how it is run."""

    base_model: Path | None = Field(
        None, description="Directory of a HF model; None uses the bundled all-MiniLM-L6-v2."
    )
    labels: tuple[str, ...] = Field(
        LABELS, description="Class names in the order of the model's outputs."
    )
    max_length: int = Field(
        128, gt=0, description="Tokens per text; longer texts are truncated and counted."
    )
    batch_size: int = Field(64, gt=0, description="Texts per inference batch.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("labels must be at least two distinct names")
        return v


class DriftSettings(_Section):
    """KS drift on embeddings and class probabilities, and the novelty detector."""

    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the drift tests.")
    correction: Literal["bonferroni", "fdr_bh"] = Field(
        "bonferroni", description="Multiple-testing correction over features."
    )
    backend: Literal["scipy", "alibi"] = Field(
        "scipy", description="KS implementation; 'alibi' needs the optional BSL-licensed extra."
    )
    pca_components: int = Field(
        20, gt=0, description="Embedding dimensions kept by the PCA fitted on the reference."
    )
    sample_size: int = Field(500, gt=0, description="Rows sampled from the window per run.")
    reference_size: int = Field(
        1_000, gt=0, description="Reference rows the current window is compared with."
    )
    min_samples: int = Field(30, gt=1, description="Below this the verdict is insufficient_data.")
    novelty_quantile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Reference quantile of the novelty score; the share above it is tested.",
    )
    novelty_neighbours: int = Field(
        10, gt=0, description="k of the k-nearest-neighbour novelty score."
    )
    novelty_min_excess: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="The novel share must exceed the expected share by this much to page.",
    )


class DecaySettings(_Section):
    """Performance decay once labels arrive."""

    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the decay t-test.")
    window: str = Field("1D", description="pandas offset alias of one evaluation window.")
    min_windows: int = Field(3, ge=2, description="Per side, before the t-test may alert.")
    min_labels_per_window: int = Field(
        20, gt=0, description="Windows with fewer labels are not scored."
    )
    min_drop: float = Field(0.03, ge=0, description="Minimum accuracy drop (fraction) to alert.")


class BiasSettings(_Section):
    """Group fairness over a segment attribute."""

    segment: str = Field("airline", description="Segment attribute the groups are taken from.")
    max_demographic_parity_difference: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Largest selection-rate gap tolerated; unset: reported, not judged "
            "(selection rates follow each group's base rate)."
        ),
    )
    max_equalized_odds_difference: float = Field(
        0.25, ge=0, le=1, description="Largest TPR/FPR gap tolerated."
    )
    min_group_size: int = Field(30, gt=0, description="Smaller groups are reported but not judged.")
    min_rate_rows: int = Field(
        10, gt=0, description="A group's TPR/FPR enters the equalized-odds gap from this many rows."
    )
    worsening_tolerance: float = Field(
        0.10,
        ge=0,
        le=1,
        description=(
            "A gap over its threshold pages only when this much wider than the champion's own "
            "gap on its frozen regression set; otherwise the verdict warns."
        ),
    )


class RetrainSettings(_Section):
    """Training set assembly, incremental fine-tuning and the gate."""

    min_rows: int = Field(
        200, gt=0, description="Refuse to train on fewer labelled production rows."
    )
    replay_ratio: float = Field(1.0, ge=0, description="Replay rows per new row.")
    holdout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the new data held out for early stopping and the gate.",
    )
    learning_rate: float = Field(4e-5, gt=0, description="Incremental fine-tuning learning rate.")
    bootstrap_learning_rate: float = Field(
        5e-5, gt=0, description="Learning rate of the first fine-tune from the base model."
    )
    epochs: float = Field(2.0, gt=0, description="Maximum epochs (early stopping may end sooner).")
    batch_size: int = Field(32, gt=0, description="Training batch size (the same on GPU and CPU).")
    max_train_rows: int = Field(
        3_000, gt=0, description="Cap on training rows so CPU runs finish in minutes."
    )
    early_stopping_patience: int = Field(
        2, ge=1, description="Evaluations without improvement before stopping."
    )
    seed: int = Field(42, description="Seed of sampling, splits and training.")
    min_gain: float = Field(0.02, description="Gate: accuracy gain needed on the new holdout.")
    max_forgetting: float = Field(
        0.05, ge=0, description="Gate: accuracy loss allowed on reference."
    )
    bias_tolerance: float = Field(0.05, ge=0, description="Gate: allowed widening of bias gaps.")
    auto_approve: bool = Field(False, description="Skip the human approval (never in production).")
    approval_timeout_s: int = Field(
        24 * 3600, gt=0, description="A retrain not approved in time ends as expired."
    )


class RegistrySettings(_Section):
    """MLflow tracking and the model registry."""

    tracking_uri: str = Field(
        "sqlite:///.driftloop/mlflow.db", description="MLflow tracking and registry URI."
    )
    artifact_location: str = Field(
        ".driftloop/mlartifacts", description="Where new experiments store artifacts."
    )
    experiment: str = Field(
        "driftloop", description="MLflow experiment of training and monitoring runs."
    )
    model_name: str = Field(
        "driftloop-classifier",
        description="Registered model name; serving loads models:/<name>@champion.",
    )


class AlertSettings(_Section):
    """Delivery to the on-call person."""

    urls: tuple[str, ...] = Field((), description="Apprise URLs; secrets are never logged.")
    outbox: Path = Field(
        Path(".driftloop/outbox.jsonl"),
        description="Every alert is also appended here (JSON lines).",
    )
    cooldown_s: int = Field(3600, ge=0, description="Same incident pages once per cooldown.")
    remind_every_s: int = Field(
        6 * 3600, ge=0, description="Reminder interval while an incident stays open."
    )
    retries: int = Field(3, ge=0, description="Delivery retries per alert URL.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry.")


class DemoSettings(_Section):
    """The simulated production traffic of ``driftloop simulate`` and ``driftloop demo``."""

    days: int = Field(6, gt=0, description="Simulated production days.")
    rows_per_day: int = Field(1_000, gt=0, description="Predictions logged per simulated day.")
    shift_start_day: int = Field(3, ge=0, description="First day with traffic from other topics.")
    shift_fraction: float = Field(
        0.6, ge=0, le=1, description="Share of other topics once shifted."
    )
    label_fraction: float = Field(0.8, ge=0, le=1, description="Share of rows that get a label.")
    label_delay_days: float = Field(
        0.25, ge=0, description="Delay before a ground-truth label arrives."
    )
    seed: int = Field(7, description="Seed of the simulated traffic.")


class Settings(BaseSettings):
    """Everything driftloop reads; see the README for each key."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(Path(".driftloop"), description="Working directory for embedded state.")
    store: StoreSettings = StoreSettings()
    model: ModelSettings = ModelSettings()
    drift: DriftSettings = DriftSettings()
    decay: DecaySettings = DecaySettings()
    bias: BiasSettings = BiasSettings()
    retrain: RetrainSettings = RetrainSettings()
    registry: RegistrySettings = RegistrySettings()
    alerts: AlertSettings = AlertSettings()
    demo: DemoSettings = DemoSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _config_file_for_build
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None and toml_file.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# Set only for the duration of one load_settings() call (pydantic-settings takes the
# TOML path from the class, not from the call).
_config_file_for_build: Path | None = None


class SettingsError(ValueError):
    """The configuration file or environment is invalid."""


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``config_file`` (default ``./driftloop.toml`` if present).

    Raises:
        SettingsError: if an explicitly named file is missing or a value is invalid.
    """
    global _config_file_for_build
    path = Path(config_file) if config_file is not None else DEFAULT_CONFIG_FILE
    if config_file is not None and not path.exists():
        raise SettingsError(f"config file not found: {path}")
    _config_file_for_build = path
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise SettingsError(f"invalid driftloop settings: {exc}") from exc
    finally:
        _config_file_for_build = None
