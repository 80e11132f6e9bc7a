"""Tests of monitor.verdict: one FDR budget per run, statuses, JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from monitor.decay import decay_test
from monitor.errors import InputError
from monitor.verdict import CheckLike, adjust_p_values, build_verdict


@dataclass(frozen=True)
class FakeCheck:
    name: str
    p_value: float | None
    alert: bool
    insufficient_data: bool = False

    def evidence(self) -> dict[str, float | int | str]:
        return {"p_value": self.p_value if self.p_value is not None else "none"}


def test_fake_check_is_checklike() -> None:
    assert isinstance(FakeCheck("a", 0.1, False), CheckLike)


def test_breach_warn_suppressed_passed() -> None:
    checks = [
        FakeCheck("strong", 1e-6, True),
        FakeCheck("small_effect", 1e-5, False),
        FakeCheck("noisy_policy", 0.04, True),
        FakeCheck("null", 0.7, False),
        FakeCheck("no_labels", None, False, insufficient_data=True),
    ]
    v = build_verdict(checks, alpha=0.05)
    assert v.status == "breach"
    assert v.breached == ("strong",)
    assert v.warned == ("small_effect",)
    assert v.suppressed == ("noisy_policy",)  # 0.04 * 4 / 3 > 0.05 after BH
    assert v.passed == ("null",)
    assert v.insufficient == ("no_labels",)
    assert not v.complete
    assert "no_labels" not in v.adjusted_p_values
    assert set(v.evidence) == {c.name for c in checks}


def test_warn_only() -> None:
    v = build_verdict([FakeCheck("a", 0.001, False), FakeCheck("b", 0.5, False)])
    assert v.status == "warn" and v.warned == ("a",)


def test_ok_and_all_insufficient() -> None:
    assert build_verdict([FakeCheck("a", 0.5, False)]).status == "ok"
    v = build_verdict([FakeCheck("a", None, False, True), FakeCheck("b", None, False, True)])
    assert v.status == "insufficient_data" and v.passed == ()


def test_no_checks_is_insufficient_data() -> None:
    v = build_verdict([])
    assert v.status == "insufficient_data" and v.checks == ()
    assert json.loads(v.to_json())["checks"] == []


def test_partially_insufficient_is_ok_but_incomplete() -> None:
    v = build_verdict([FakeCheck("a", 0.5, False), FakeCheck("b", None, False, True)])
    assert v.status == "ok" and not v.complete and v.passed == ("a",)


@pytest.mark.parametrize(
    "checks",
    [
        [FakeCheck("a", 0.1, False), FakeCheck("a", 0.2, False)],
        [FakeCheck("a", None, False)],
        [FakeCheck("a", float("nan"), False)],
        [FakeCheck("a", 1.5, False)],
    ],
)
def test_bad_checks(checks: list[FakeCheck]) -> None:
    with pytest.raises(InputError):
        build_verdict(checks)


def test_bad_method_and_alpha() -> None:
    with pytest.raises(InputError):
        build_verdict([FakeCheck("a", 0.1, False)], method="holm")
    with pytest.raises(InputError):
        build_verdict([FakeCheck("a", 0.1, False)], alpha=1.0)


def test_adjust_matches_bh_by_hand() -> None:
    ps = [0.01, 0.04, 0.03, 0.5]
    # BH: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.0533, 0.0533, 0.5
    assert adjust_p_values(ps, "fdr_bh") == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert adjust_p_values(ps, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 1.0])
    by = adjust_p_values(ps, "fdr_by")
    assert all(b >= a for a, b in zip(adjust_p_values(ps), by, strict=True))


@pytest.mark.parametrize("method", ["fdr_bh", "bonferroni"])
def test_run_level_false_alarm_rate_under_null(method: str) -> None:
    """20 null checks, uniform p-values, each alerting at its own 5 %: run-level rate <= alpha."""
    alpha, runs = 0.05, 4000
    rng = np.random.default_rng(12345)
    breach = flagged = 0
    for _ in range(runs):
        ps = rng.random(20)
        checks = [FakeCheck(f"c{i}", float(p), bool(p < alpha)) for i, p in enumerate(ps)]
        v = build_verdict(checks, alpha=alpha, method=method)
        breach += v.status == "breach"
        flagged += v.status != "ok"
    tolerance = 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert breach / runs <= alpha + tolerance
    assert flagged / runs <= alpha + tolerance
    # Without the correction, the same runs would alarm in ~64 % of cases.
    assert 1 - (1 - alpha) ** 20 > 0.6


def test_real_signal_still_breaches_among_nulls() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        nulls = [FakeCheck(f"c{i}", float(p), bool(p < 0.05)) for i, p in enumerate(rng.random(19))]
        ref = rng.normal(0.88, 0.01, 7)
        rec = rng.normal(0.78, 0.01, 4)
        decay = decay_test(ref, rec)
        v = build_verdict([*nulls, decay])
        hits += "performance_decay" in v.breached
    assert hits >= 195


def test_to_json_round_trip_strict() -> None:
    decay = decay_test([0.9] * 4, [0.8] * 4)  # degenerate: statistic = inf
    v = build_verdict([decay, FakeCheck("x", None, False, True)], window={"rows": 10})
    text = v.to_json()
    data = json.loads(text)
    assert data["status"] == "breach"
    assert data["checks"][0]["evidence"]["statistic"] == "inf"
    assert data["checks"][0]["decision"] == "breach"
    assert data["checks"][1]["decision"] == "insufficient_data"
    assert data["window"] == {"rows": 10}
    assert data["created_at"].endswith("+00:00")
    assert "NaN" not in text and "Infinity" not in text
