"""Which labelled rows an incident-driven retrain reads, and what too little data does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftloop.settings import Settings
from flows.errors import FlowError
from flows.retrain_flow import RETRAIN_LOOKBACK_DAYS, retrain_window, run_retrain
from flows.state import Incident

AS_OF = datetime(2026, 3, 4, 18, 0, tzinfo=UTC)


def _incident(verdict: dict[str, Any]) -> Incident:
    return Incident(
        id=1,
        key="clf@v1",
        model_name="clf",
        model_version="1",
        status="open",
        opened_at=datetime(2026, 3, 4),
        resolved_at=None,
        last_notified_at=None,
        notify_count=1,
        verdict=verdict,
        report_path=None,
        monitor_flow_run_id=None,
        retrain_flow_run_id=None,
        approval="auto_approved",
        approver=None,
        approval_reason=None,
        retrain_outcome=None,
        last_delivery_error=None,
    )


def test_window_starts_at_the_breach() -> None:
    breach = _incident({"window_start": "2026-03-03T00:00:00+00:00"})
    assert retrain_window(breach, as_of=AS_OF) == (datetime(2026, 3, 3, tzinfo=UTC), AS_OF)
    since = datetime(2026, 3, 2, 12, 0)  # naive means UTC; the caller's since wins
    assert retrain_window(breach, as_of=AS_OF, since=since)[0] == since.replace(tzinfo=UTC)
    manual = retrain_window(None, as_of=AS_OF)
    assert manual == (AS_OF - timedelta(days=RETRAIN_LOOKBACK_DAYS), AS_OF)
    assert retrain_window(_incident({}), as_of=AS_OF, window_days=2)[0] == AS_OF - timedelta(2)
    with pytest.raises(FlowError, match="empty retrain window"):
        retrain_window(breach, as_of=datetime(2026, 3, 2, tzinfo=UTC))


def test_run_retrain_reads_labels_as_of_the_window_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import retrain.pipeline
    from retrain.errors import TrainingDataError

    seen: dict[str, Any] = {}

    def fake_retrain(settings: Settings, store: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise TrainingDataError("12 distinct labelled rows, fewer than retrain.min_rows=200")

    monkeypatch.setattr(retrain.pipeline, "retrain", fake_retrain)
    window = (AS_OF - timedelta(days=1), AS_OF)
    result = run_retrain.fn(settings, window, "alice", "drift")
    assert seen["window"] == window and seen["as_of"] == AS_OF
    assert result == {
        "status": "insufficient_data",
        "promoted": False,
        "error": "12 distinct labelled rows, fewer than retrain.min_rows=200",
    }


@pytest.mark.integration
def test_too_little_data_frees_the_claim(
    harness: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import retrain.pipeline
    from flows.retrain_flow import retrain_flow
    from flows.state import APPROVAL_AUTO, APPROVAL_NONE
    from flows.wiring import open_store_and_state, settings_overrides
    from retrain.errors import TrainingDataError

    def fake_retrain(settings: Settings, store: Any, **kwargs: Any) -> Any:
        raise TrainingDataError("3 distinct labelled rows, fewer than retrain.min_rows=200")

    monkeypatch.setattr(retrain.pipeline, "retrain", fake_retrain)
    s = settings.model_copy(
        update={"retrain": settings.retrain.model_copy(update={"auto_approve": True})}
    )
    _, state = open_store_and_state(s)
    verdict = {"status": "breach", "window_start": (AS_OF - timedelta(days=1)).isoformat()}
    state.open_incident("clf@v1", model_name="clf", model_version="1", verdict=verdict)
    assert state.claim_retrain("clf@v1", approval=APPROVAL_AUTO)
    result = retrain_flow(
        incident_key="clf@v1", overrides=settings_overrides(s), claimed=True, as_of=AS_OF
    )
    assert result["status"] == "insufficient_data" and "min_rows" in result["error"]
    assert result["window_start"] == verdict["window_start"]
    after = state.get_open("clf@v1")
    assert after is not None and after.approval == APPROVAL_NONE
    assert after.retrain_outcome == "insufficient_data"
    assert state.claim_retrain("clf@v1", approval=APPROVAL_AUTO)  # the next breach may retry
