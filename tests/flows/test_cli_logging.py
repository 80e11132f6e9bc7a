"""The CLI's logging: driftloop's own loggers at INFO, third-party ones only from WARNING."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from flows.cli import OWN_LOGGERS, THIRD_PARTY_ENV, _configure_logging


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put the root handlers and levels back (the CLI replaces them with force=True)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    own = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    for key in THIRD_PARTY_ENV:
        monkeypatch.setenv(key, "placeholder")  # recorded, so the test's value is undone
        monkeypatch.delenv(key)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in own.items():
            logging.getLogger(name).setLevel(lvl)


def _shown(verbose: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _configure_logging(verbose)
    (handler,) = logging.getLogger().handlers
    shown: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "emit", shown.append)
    chatty = logging.getLogger("thirdparty.sets.its.own.level")
    chatty.setLevel(logging.INFO)  # like Prefect's run loggers
    logging.getLogger("retrain.pipeline").info("ours")
    logging.getLogger("flows.demo").debug("ours, debug")
    logging.getLogger("datasets.fingerprint").info("bytecode")
    logging.getLogger("dill").info("more bytecode")
    chatty.info("chatter")
    logging.getLogger("mlflow.store").warning("theirs, a warning")
    return [r.getMessage() for r in shown]


def test_only_own_loggers_below_warning(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _shown(False, monkeypatch) == ["ours", "theirs, a warning"]
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"


def test_verbose_shows_debug_and_third_party_info(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = _shown(True, monkeypatch)
    assert shown[:2] == ["ours", "ours, debug"] and "chatter" in shown


def test_a_users_environment_wins(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    _configure_logging(False)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"


_PREFECT_TIMEOUT = """
from flows.cli import _configure_logging
_configure_logging(False)
from prefect.settings import get_current_settings
print(get_current_settings().server.ephemeral.startup_timeout_seconds)
"""


@pytest.mark.parametrize(("users", "expected"), [(None, "180"), ("45", "45")])
def test_the_ephemeral_prefect_server_gets_time_to_start(users: str | None, expected: str) -> None:
    # Prefect's default of 20 s failed a new user's first `make run` (its database is created
    # on that first start). Prefect reads its settings once, on import: a fresh process shows
    # whether the CLI's default lands before that.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if users is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = users
    out = subprocess.run(
        [sys.executable, "-c", _PREFECT_TIMEOUT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[-1] == expected
