"""The MLflow model registry: versions, the ``champion``/``challenger`` aliases, tracked runs.

Design (where the brief left a choice):

* One ``mlflow.MlflowClient`` per :class:`Registry`, built lazily with the tracking and registry
  URIs passed explicitly; nothing is set globally. Runs are logged through :class:`TrackedRun`
  (a thin wrapper over the client), so no fluent ``mlflow.start_run`` global state is involved.
* Models are logged as the saved Hugging Face directory (``save_pretrained``, safetensors) under
  the run's ``model/`` artifact path, and registered with that location as the version source.
  Loading downloads ``models:/<name>@champion`` and reads it with
  :func:`driftloop.models.load_classifier` (``local_files_only``), so nothing can reach the hub
  and no flavour-specific pipeline/signature machinery is involved (robust with tiny models).
* Aliases, not stages: a new version gets ``challenger``; :meth:`Registry.promote` sets
  ``champion`` on the new version first (one atomic call), then ``previous-champion`` on the old
  one. Each promoted version remembers the champion it replaced (tag ``previous_champion``), so
  successive rollbacks walk back the chain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from driftloop.settings import LABELS, RegistrySettings
from retrain.errors import (
    ModelArtifactError,
    NoChampionError,
    PromotionError,
    RegistryUnavailable,
    RetrainError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mlflow import MlflowClient
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
MODEL_ARTIFACT_PATH = "model"
_MARKER = ".driftloop-complete"
_PING_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version."""

    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    aliases: tuple[str, ...] = ()


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


class TrackedRun:
    """A started MLflow run, logged through an explicit client (no global tracking state)."""

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str) -> None:
        """Wrap an existing run; use :meth:`Registry.start_run` to create one."""
        self.client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values stringified)."""
        for key, value in params.items():
            self.client.log_param(self.run_id, key, _tag_value(value))

    def log_metrics(self, metrics: Mapping[str, float | int], step: int | None = None) -> None:
        """Log numeric metrics; booleans become 0/1, non-numbers are rejected."""
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, _tag_value(value))

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Log a JSON artifact."""
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_artifacts(self, local_dir: Path | str, artifact_path: str | None = None) -> None:
        """Log every file of a directory."""
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_path: Path | str, artifact_path: str | None = None) -> None:
        """Log one file."""
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        self.client.set_terminated(self.run_id, status=status)


class Registry:
    """The registered classifier in MLflow, addressed by aliases."""

    def __init__(self, settings: RegistrySettings) -> None:
        """Remember the settings; nothing is contacted or created until first use."""
        self.settings = settings
        self.name = settings.model_name
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    # --- connection -----------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        """The tracking (and registry) URI, with relative SQLite paths made absolute."""
        uri = self.settings.tracking_uri
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            path = Path(uri.removeprefix("sqlite:///"))
            uri = f"sqlite:///{path.resolve()}"
        return uri

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (created on first use; an HTTP server is pinged first)."""
        if self._client is None:
            self._check_reachable()
            uri = self.tracking_uri
            if uri.startswith("sqlite:///"):
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            from mlflow import MlflowClient

            try:
                self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            except Exception as exc:
                raise RegistryUnavailable(f"cannot open MLflow at {uri}: {exc}") from exc
        return self._client

    def _check_reachable(self) -> None:
        # MLflow's HTTP client retries for minutes by default; fail fast with a clear error.
        uri = self.settings.tracking_uri
        parsed = urlparse(uri)
        if parsed.scheme not in {"http", "https"}:
            return
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=_PING_TIMEOUT_S)
        except requests.RequestException as exc:
            raise RegistryUnavailable(
                f"MLflow tracking server {uri} does not answer ({type(exc).__name__}); "
                "start it or fix registry.tracking_uri"
            ) from exc

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Translate MLflow/backend failures into retrain errors."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RetrainError:
            raise
        except MlflowException as exc:
            raise RetrainError(f"MLflow failed to {what}: {exc.message}") from exc
        except (ConnectionError, OSError) as exc:
            raise RegistryUnavailable(f"MLflow unavailable while trying to {what}: {exc}") from exc

    @property
    def artifact_root(self) -> Path:
        """Local directory of run artifacts (created lazily)."""
        return Path(self.settings.artifact_location).resolve()

    def experiment_id(self) -> str:
        """The experiment id, creating the experiment (and its artifact directory) on first use."""
        if self._experiment_id is None:
            with self._calls("get or create the experiment"):
                exp = self.client.get_experiment_by_name(self.settings.experiment)
                if exp is None:
                    location = self.settings.artifact_location
                    if "://" not in location:
                        self.artifact_root.mkdir(parents=True, exist_ok=True)
                        location = self.artifact_root.as_uri()
                    self._experiment_id = self.client.create_experiment(
                        self.settings.experiment, artifact_location=location
                    )
                else:
                    self._experiment_id = exp.experiment_id
        return self._experiment_id

    # --- runs -------------------------------------------------------------------------------

    def start_run(
        self,
        run_name: str,
        *,
        parent: TrackedRun | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> TrackedRun:
        """Create a run (a nested child run when ``parent`` is given)."""
        all_tags = {k: _tag_value(v) for k, v in (tags or {}).items()}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent.run_id
        with self._calls("start a run"):
            run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=all_tags)
        return TrackedRun(self.client, run.info.run_id, run.info.artifact_uri)

    @contextlib.contextmanager
    def run(
        self,
        run_name: str,
        *,
        parent: TrackedRun | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[TrackedRun]:
        """Context manager: the run ends FINISHED, or FAILED when the body raises."""
        tracked = self.start_run(run_name, parent=parent, tags=tags)
        try:
            yield tracked
        except BaseException:
            with contextlib.suppress(Exception):
                tracked.end("FAILED")
            raise
        tracked.end("FINISHED")

    # --- versions -----------------------------------------------------------------------------

    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags or {}),
            source=mv.source,
            aliases=tuple(getattr(mv, "aliases", ()) or ()),
        )

    def _by_alias(self, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        with self._calls(f"read alias {alias!r}"):
            try:
                self.client.get_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            try:
                mv = self.client.get_model_version_by_alias(self.name, alias)
            except MlflowException as exc:
                if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    return None
                raise
        return self._info(mv)

    def champion(self) -> VersionInfo | None:
        """The version behind ``champion``, or None before the bootstrap."""
        return self._by_alias(CHAMPION)

    def challenger(self) -> VersionInfo | None:
        """The version behind ``challenger``, or None."""
        return self._by_alias(CHALLENGER)

    def previous_champion(self) -> VersionInfo | None:
        """The version behind ``previous-champion``, or None."""
        return self._by_alias(PREVIOUS_CHAMPION)

    def version(self, version: str | int) -> VersionInfo:
        """One version by number."""
        with self._calls(f"read version {version}"):
            return self._info(self.client.get_model_version(self.name, str(version)))

    def champion_uri(self) -> str:
        """``models:/<name>@champion``: the only URI serving and retraining load from."""
        return f"models:/{self.name}@{CHAMPION}"

    def register(
        self,
        run: TrackedRun,
        model_dir: Path | str,
        *,
        tags: Mapping[str, Any] | None = None,
        alias: str = CHALLENGER,
    ) -> VersionInfo:
        """Log a saved HF model directory to ``run`` and register it as a new version.

        The new version gets ``alias`` (``challenger``); ``champion`` is never touched here.

        Raises:
            ModelArtifactError: the directory is not a complete saved model.
        """
        model_dir = Path(model_dir)
        _check_model_dir(model_dir)
        from mlflow.exceptions import MlflowException

        with self._calls("register a model version"):
            run.log_artifacts(model_dir, MODEL_ARTIFACT_PATH)
            try:
                self.client.create_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            mv = self.client.create_model_version(
                self.name,
                source=f"{run.artifact_uri}/{MODEL_ARTIFACT_PATH}",
                run_id=run.run_id,
                tags={k: _tag_value(v) for k, v in (tags or {}).items()},
                await_creation_for=0,
            )
            self.client.set_registered_model_alias(self.name, alias, str(mv.version))
        log.info("registered %s version %s as %s", self.name, mv.version, alias)
        return self.version(mv.version)

    def set_tags(self, version: str | int, tags: Mapping[str, Any]) -> None:
        """Tag one version."""
        with self._calls(f"tag version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, _tag_value(value))

    # --- loading ----------------------------------------------------------------------------

    def download(self, version: str | int | None = None, dst: Path | None = None) -> Path:
        """Download a version's model directory (default: by the ``champion`` alias).

        Raises:
            ModelArtifactError: the artifact is missing or incomplete.
        """
        from mlflow.artifacts import download_artifacts

        # Resolve the alias (or number) through our own client, then download the version's
        # source: download_artifacts(models:/...) would consult the global registry URI.
        uri = self.champion_uri() if version is None else f"models:/{self.name}/{version}"
        info = self.champion() if version is None else self.version(version)
        if info is None:
            raise NoChampionError(f"no {CHAMPION!r} for {self.name}: run the bootstrap first")
        target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="driftloop-model-"))
        try:
            local = Path(
                download_artifacts(
                    artifact_uri=info.source,
                    dst_path=str(target),
                    tracking_uri=self.tracking_uri,
                )
            )
        except Exception as exc:
            raise ModelArtifactError(f"cannot download {uri} ({info.source}): {exc}") from exc
        _check_model_dir(local)
        return local

    def load_champion(
        self, labels: Sequence[str] = LABELS
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, VersionInfo]:
        """Load the model behind ``models:/<name>@champion`` (never from the hub).

        Raises:
            NoChampionError: no champion is registered.
            ModelArtifactError: its artifact is missing or corrupt.
        """
        model_dir, info = self.download_champion()
        return (*load_model_dir(model_dir, labels), info)

    def download_champion(self) -> tuple[Path, VersionInfo]:
        """Download the champion's model directory into a per-version cache."""
        info = self.champion()
        if info is None:
            raise NoChampionError(f"no {CHAMPION!r} for {self.name}: run the bootstrap first")
        cache = self.artifact_root.parent / "model-cache" / f"{self.name}-v{info.version}"
        if (cache / _MARKER).is_file():
            return cache / MODEL_ARTIFACT_PATH, info
        shutil.rmtree(cache, ignore_errors=True)
        model_dir = self.download(None, cache)
        (cache / _MARKER).write_text(info.version)
        return model_dir, info

    def verify(self, version: str | int, labels: Sequence[str] = LABELS) -> None:
        """Download and load a version once so a broken artifact is never promoted.

        Raises:
            ModelArtifactError: the artifact is missing or cannot be loaded.
        """
        with tempfile.TemporaryDirectory(prefix="driftloop-verify-") as tmp:
            load_model_dir(self.download(version, Path(tmp)), labels)

    # --- promotion ----------------------------------------------------------------------------

    def promote(
        self,
        version: str | int,
        *,
        approver: str,
        reason: str,
        labels: Sequence[str] = LABELS,
    ) -> VersionInfo:
        """Move ``champion`` to ``version``; the old champion becomes ``previous-champion``.

        Idempotent: promoting the current champion changes nothing, except that a promotion
        killed between its alias moves (champion and challenger on the same version) is
        completed. The new alias is set in one call before the old ones are touched, so the
        registry always has a champion.

        Raises:
            ModelArtifactError: the version's artifact is broken (champion untouched).
            PromotionError: the alias update failed (champion untouched).
        """
        version = str(version)
        current = self.champion()
        if current is not None and current.version == version:
            challenger = self.challenger()
            if challenger is not None and challenger.version == version:
                # Champion and challenger on one version only happens when a promotion died
                # between its alias moves (kill -9): finish the bookkeeping it did not reach.
                previous = current.tags.get("previous_champion", "")
                log.warning(
                    "version %s is champion but still challenger: completing an interrupted "
                    "promotion (previous champion %s)",
                    version,
                    previous or "none",
                )
                self._finish_promotion(version, previous or None)
                return self.version(version)
            log.info("version %s is already the champion; nothing to do", version)
            return current
        self.verify(version, labels)
        self.set_tags(
            version,
            {
                "approver": approver,
                "reason": reason,
                "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "previous_champion": current.version if current else "",
            },
        )
        try:
            with self._calls(f"move {CHAMPION} to version {version}"):
                self.client.set_registered_model_alias(self.name, CHAMPION, version)
        except RetrainError as exc:
            raise PromotionError(
                f"could not move {CHAMPION!r} to version {version}; "
                f"champion stays {current.version if current else None}: {exc}"
            ) from exc
        self._finish_promotion(version, current.version if current else None)
        log.info("promoted %s version %s (was %s)", self.name, version, current and current.version)
        return self.version(version)

    def _finish_promotion(self, version: str, previous: str | None) -> None:
        """The bookkeeping after ``champion`` moved: ``previous-champion``, then ``challenger``.

        ``challenger`` is removed last: while it still points at the new champion, a killed
        promotion is recognisable and :meth:`promote` of the same version completes it.
        """
        with self._calls("update the secondary aliases"):
            if previous is not None:
                self.client.set_registered_model_alias(self.name, PREVIOUS_CHAMPION, previous)
            challenger = self.challenger()
            if challenger is not None and challenger.version == version:
                self.client.delete_registered_model_alias(self.name, CHALLENGER)

    def rollback(self, *, by: str, reason: str, labels: Sequence[str] = LABELS) -> VersionInfo:
        """Move ``champion`` back to ``previous-champion``.

        ``previous-champion`` then moves one step further back (the rolled-back-to version's own
        ``previous_champion`` tag), or is removed when there is none.

        Raises:
            NoChampionError: there is no previous champion.
            ModelArtifactError: the previous champion's artifact is broken (champion untouched).
        """
        current = self.champion()
        previous = self.previous_champion()
        if previous is None or current is None:
            raise NoChampionError(f"nothing to roll back to for {self.name}")
        self.verify(previous.version, labels)
        try:
            with self._calls(f"move {CHAMPION} back to version {previous.version}"):
                self.client.set_registered_model_alias(self.name, CHAMPION, previous.version)
        except RetrainError as exc:
            raise PromotionError(
                f"rollback failed; champion stays {current.version}: {exc}"
            ) from exc
        self.set_tags(current.version, {"rolled_back_by": by, "rollback_reason": reason})
        self.set_tags(previous.version, {"restored_by": by, "restore_reason": reason})
        older = previous.tags.get("previous_champion", "")
        with self._calls("update previous-champion"):
            if older and older != current.version:
                self.client.set_registered_model_alias(self.name, PREVIOUS_CHAMPION, older)
            else:
                self.client.delete_registered_model_alias(self.name, PREVIOUS_CHAMPION)
        log.info("rolled back %s from %s to %s", self.name, current.version, previous.version)
        return self.version(previous.version)

    def download_run_artifact(
        self, run_id: str, artifact_path: str, dst: Path | None = None
    ) -> Path:
        """Download one artifact of a run.

        Raises:
            ModelArtifactError: it is missing.
        """
        from mlflow.artifacts import download_artifacts

        try:
            return Path(
                download_artifacts(
                    run_id=run_id,
                    artifact_path=artifact_path,
                    dst_path=str(dst) if dst is not None else None,
                    tracking_uri=self.tracking_uri,
                )
            )
        except Exception as exc:
            raise ModelArtifactError(
                f"cannot download {artifact_path!r} of run {run_id}: {exc}"
            ) from exc


def _check_model_dir(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise ModelArtifactError(f"model artifact incomplete: {model_dir}/config.json missing")
    weights = list(model_dir.glob("*.safetensors")) + list(model_dir.glob("*.bin"))
    if not weights:
        raise ModelArtifactError(f"model artifact incomplete: no weights in {model_dir}")


def load_model_dir(
    model_dir: Path, labels: Sequence[str] = LABELS
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a downloaded model directory; any failure is a :class:`ModelArtifactError`."""
    from driftloop.models import ModelLoadError, load_classifier

    _check_model_dir(model_dir)
    try:
        return load_classifier(model_dir, labels)
    except (ModelLoadError, Exception) as exc:  # safetensors raises its own error type
        raise ModelArtifactError(f"cannot load model artifact {model_dir}: {exc}") from exc
