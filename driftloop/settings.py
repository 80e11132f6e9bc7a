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

    url: str = "sqlite:///.driftloop/driftloop.db"
    max_text_chars: int = Field(10_000, gt=0, description="Longer inputs are quarantined.")
    probability_tolerance: float = Field(1e-3, gt=0, description="Allowed |sum(p) - 1|.")
    future_tolerance_s: float = Field(300.0, ge=0, description="Clock skew allowed for timestamps.")
    batch_size: int = Field(5_000, gt=0, description="Rows per database transaction on ingest.")


class ModelSettings(_Section):
    """The monitored classifier and how it is run."""

    base_model: Path | None = Field(
        None, description="Directory of a HF model; None uses the bundled all-MiniLM-L6-v2."
    )
    labels: tuple[str, ...] = LABELS
    max_length: int = Field(128, gt=0)
    batch_size: int = Field(64, gt=0)
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("labels must be at least two distinct names")
        return v


class DriftSettings(_Section):
    """KS drift on embeddings and class probabilities, and the novelty detector."""

    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr_bh"] = "bonferroni"
    backend: Literal["scipy", "alibi"] = "scipy"
    pca_components: int = Field(20, gt=0)
    sample_size: int = Field(500, gt=0, description="Rows sampled from the window per run.")
    reference_size: int = Field(1_000, gt=0)
    min_samples: int = Field(30, gt=1, description="Below this the verdict is insufficient_data.")
    novelty_quantile: float = Field(0.95, gt=0, lt=1)
    novelty_neighbours: int = Field(10, gt=0)


class DecaySettings(_Section):
    """Performance decay once labels arrive."""

    alpha: float = Field(0.05, gt=0, lt=1)
    window: str = Field("1D", description="pandas offset alias of one evaluation window.")
    min_windows: int = Field(3, ge=2, description="Per side, before the t-test may alert.")
    min_labels_per_window: int = Field(20, gt=0)
    min_drop: float = Field(0.03, ge=0, description="Minimum accuracy drop (fraction) to alert.")


class BiasSettings(_Section):
    """Group fairness over a segment attribute."""

    segment: str = "airline"
    max_demographic_parity_difference: float = Field(0.25, ge=0, le=1)
    max_equalized_odds_difference: float = Field(0.25, ge=0, le=1)
    min_group_size: int = Field(30, gt=0)


class RetrainSettings(_Section):
    """Training set assembly, incremental fine-tuning and the gate."""

    min_rows: int = Field(200, gt=0)
    replay_ratio: float = Field(1.0, ge=0, description="Replay rows per new row.")
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    learning_rate: float = Field(2e-5, gt=0)
    bootstrap_learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(32, gt=0)
    max_train_rows: int = Field(3_000, gt=0)
    early_stopping_patience: int = Field(2, ge=1)
    seed: int = 42
    min_gain: float = Field(0.02, description="Gate: accuracy gain needed on the new holdout.")
    max_forgetting: float = Field(0.05, ge=0, description="Gate: accuracy loss allowed on reference.")
    bias_tolerance: float = Field(0.05, ge=0, description="Gate: allowed widening of bias gaps.")
    auto_approve: bool = Field(False, description="Skip the human approval (never in production).")
    approval_timeout_s: int = Field(24 * 3600, gt=0)


class RegistrySettings(_Section):
    """MLflow tracking and the model registry."""

    tracking_uri: str = "sqlite:///.driftloop/mlflow.db"
    artifact_location: str = ".driftloop/mlartifacts"
    experiment: str = "driftloop"
    model_name: str = "driftloop-classifier"


class AlertSettings(_Section):
    """Delivery to the on-call person."""

    urls: tuple[str, ...] = Field((), description="Apprise URLs; secrets are never logged.")
    outbox: Path = Path(".driftloop/outbox.jsonl")
    cooldown_s: int = Field(3600, ge=0, description="Same incident pages once per cooldown.")
    remind_every_s: int = Field(6 * 3600, ge=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)


class DemoSettings(_Section):
    """The simulated production traffic of ``driftloop simulate`` and ``driftloop demo``."""

    days: int = Field(6, gt=0)
    rows_per_day: int = Field(300, gt=0)
    shift_start_day: int = Field(3, ge=0)
    shift_fraction: float = Field(0.6, ge=0, le=1, description="Share of other topics once shifted.")
    label_fraction: float = Field(0.5, ge=0, le=1, description="Share of rows that get a label.")
    label_delay_days: float = Field(1.0, ge=0)
    seed: int = 7


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
