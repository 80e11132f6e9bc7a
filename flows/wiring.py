"""How a flow run gets its settings, prediction log and state database.

Flow parameters must be JSON-serialisable (they travel through the Prefect API), so a flow
takes ``config_file`` and an ``overrides`` dict and builds :class:`Settings` once at its
entry with :func:`build_settings`. :func:`settings_overrides` turns an in-process
``Settings`` into such a dict (used by the CLI, the demo and the tests).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from driftloop.settings import Settings, load_settings
from flows.errors import FlowError
from flows.state import StateDB

if TYPE_CHECKING:
    from monitor.store import PredictionStore

log = logging.getLogger(__name__)

RETRAIN_DEPLOYMENT = "driftloop-retrain/retrain"
MONITOR_DEPLOYMENT = "driftloop-monitor/monitor"


def settings_overrides(settings: Settings) -> dict[str, Any]:
    """Every value of ``settings`` as a JSON-ready dict that rebuilds it exactly."""
    return settings.model_dump(mode="json")


def build_settings(
    config_file: str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Settings of one flow run (the file, then the environment, then ``overrides``)."""
    return load_settings(config_file, **(overrides or {}))


def open_store_and_state(settings: Settings) -> tuple[PredictionStore, StateDB]:
    """The prediction log and the orchestration tables on its engine."""
    try:
        from monitor.store import open_store
    except ImportError as exc:  # pragma: no cover - only while monitor.store is being built
        raise FlowError(f"the prediction log (monitor.store) is not available: {exc}") from exc
    settings.home.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store, labels=settings.model.labels, create=True)
    return store, StateDB(store.engine)


def retrain_deployment_exists(name: str = RETRAIN_DEPLOYMENT) -> bool:
    """True when a retrain deployment is registered (``driftloop serve`` or a worker)."""
    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
        return True
    except Exception:
        return False
