"""One verdict per monitoring run, under a single false-discovery budget.

Every check of a run (drift, novelty, decay, the accuracy estimate, bias, ...) contributes its
p-value to one multiple-testing correction (Benjamini-Hochberg by default), so adding checks
does not raise the run's false-alarm rate. Each check keeps its own practical policy
(``alert``: e.g. "the drop is at least 3 points", "the parity gap is above 0.25").

Decision per check, with ``q`` its adjusted p-value:

* ``breached``: ``q < alpha`` AND ``alert`` - statistically credible at the run level and
  material by the check's own policy.
* ``warned``: ``q < alpha`` and NOT ``alert`` - a real but (so far) small effect.
* ``suppressed``: ``alert`` but ``q >= alpha`` - the check's own policy fired, but with this
  many tests of the run the signal is plausibly noise. Listed (with evidence) but it does not
  raise the status. We deliberately do not call this a warning: with 20 checks each alerting
  at its own 5 % level, a null run would "warn" in ~64 % of runs, and warnings nobody trusts
  are worse than none. With this rule both breach and warn stay inside the FDR budget.
* ``passed``: neither.
* ``insufficient``: the check could not be computed honestly (``insufficient_data``); it takes
  no part in the correction and is never counted as passed.

Run status: ``breach`` if any check breached, else ``warn`` if any warned, else
``insufficient_data`` if every check was insufficient (or there were no checks), else ``ok`` (``insufficient`` still
lists the checks that had too little data; ``complete`` is False then).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from monitor.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["CheckLike", "InsufficientCheck", "MonitorVerdict", "adjust_p_values", "build_verdict"]

Status = Literal["ok", "warn", "breach", "insufficient_data"]
Method = Literal["fdr_bh", "fdr_by", "bonferroni"]
_METHODS: tuple[str, ...] = ("fdr_bh", "fdr_by", "bonferroni")


@runtime_checkable
class CheckLike(Protocol):
    """What the verdict needs from a check result (see DEVELOPERS.md)."""

    @property
    def name(self) -> str:
        """Unique name of the check within the run."""
        ...

    @property
    def p_value(self) -> float | None:
        """p-value of the test; None only with ``insufficient_data``."""
        ...

    @property
    def alert(self) -> bool:
        """The check's own decision at its own threshold."""
        ...

    @property
    def insufficient_data(self) -> bool:
        """True where the check could not be computed honestly."""
        ...

    def evidence(self) -> dict[str, float | int | str]:
        """Flat numbers behind the decision."""
        ...


@dataclass(frozen=True)
class InsufficientCheck:
    """A check that could not be computed honestly, with the reason (e.g. no labels yet)."""

    name: str
    reason: str
    n: int = 0
    p_value: None = None
    alert: bool = False
    insufficient_data: bool = True

    def evidence(self) -> dict[str, float | int | str]:
        """The reason and the rows there were."""
        return {
            "name": self.name,
            "verdict": "insufficient_data",
            "reason": self.reason,
            "n": self.n,
        }


@dataclass(frozen=True)
class MonitorVerdict:
    """The one decision of a monitoring run, with the evidence of every check."""

    status: Status
    checks: tuple[CheckLike, ...]
    breached: tuple[str, ...]
    warned: tuple[str, ...]
    suppressed: tuple[str, ...]
    passed: tuple[str, ...]
    insufficient: tuple[str, ...]
    evidence: dict[str, dict[str, float | int | str]]
    p_values: dict[str, float]
    adjusted_p_values: dict[str, float]
    alpha: float
    method: str
    created_at: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    window: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every check had enough data."""
        return not self.insufficient

    def to_dict(self) -> dict[str, Any]:
        """driftloop's JSON-ready form of the verdict (non-finite floats become strings)."""
        checks = []
        for check in self.checks:
            name = check.name
            checks.append(
                {
                    "name": name,
                    "decision": _decision_of(self, name),
                    "alert": bool(check.alert),
                    "insufficient_data": bool(check.insufficient_data),
                    "p_value": _json_number(self.p_values.get(name)),
                    "adjusted_p_value": _json_number(self.adjusted_p_values.get(name)),
                    "evidence": {k: _json_number(v) for k, v in self.evidence[name].items()},
                }
            )
        return {
            "status": self.status,
            "complete": self.complete,
            "alpha": self.alpha,
            "method": self.method,
            "created_at": self.created_at.isoformat(),
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "window": {k: _json_number(v) for k, v in self.window.items()},
            "breached": list(self.breached),
            "warned": list(self.warned),
            "suppressed": list(self.suppressed),
            "passed": list(self.passed),
            "insufficient": list(self.insufficient),
            "checks": checks,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The verdict as strict JSON (no NaN/Infinity literals)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, sort_keys=False)


def _decision_of(verdict: MonitorVerdict, name: str) -> str:
    for decision, names in (
        ("breach", verdict.breached),
        ("warn", verdict.warned),
        ("suppressed", verdict.suppressed),
        ("insufficient_data", verdict.insufficient),
    ):
        if name in names:
            return decision
    return "ok"


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": strict JSON has no literal for them
    return value


def adjust_p_values(p_values: Sequence[float], method: str = "fdr_bh") -> list[float]:
    """Multiple-testing adjusted p-values (``fdr_bh``, ``fdr_by`` or ``bonferroni``), capped at 1.

    Raises:
        InputError: on an unknown method or p-values outside [0, 1].
    """
    if method not in _METHODS:
        raise InputError(f"unknown correction {method!r}; use one of {_METHODS}")
    ps = [float(p) for p in p_values]
    if any(not (0.0 <= p <= 1.0) for p in ps):  # also rejects NaN
        raise InputError(f"p-values must lie in [0, 1]: {ps}")
    if not ps:
        return []
    if method == "bonferroni":
        return [min(1.0, p * len(ps)) for p in ps]
    from scipy import stats

    adjusted = stats.false_discovery_control(ps, method="bh" if method == "fdr_bh" else "by")
    return [min(1.0, float(q)) for q in adjusted]


def build_verdict(
    checks: Sequence[CheckLike],
    *,
    alpha: float = 0.05,
    method: Method | str = "fdr_bh",
    created_at: datetime | None = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    window: Mapping[str, float | int | str] | None = None,
) -> MonitorVerdict:
    """Combine the checks of one run into one verdict under one false-discovery budget.

    Args:
        checks: Results following the check contract; names must be unique.
        alpha: The run's false-discovery (FDR) level.
        method: ``fdr_bh`` (Benjamini-Hochberg), ``fdr_by`` (Benjamini-Yekutieli, any
            dependence) or ``bonferroni`` (family-wise error).
        created_at: Time of the verdict (default: now, UTC).
        window_start: Start of the monitored window.
        window_end: End of the monitored window.
        window: Extra window facts (rows, model version, ...).

    Raises:
        InputError: on duplicate names, a p-value missing without
            ``insufficient_data``, or a p-value outside [0, 1].
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if method not in _METHODS:
        raise InputError(f"unknown correction {method!r}; use one of {_METHODS}")
    checks = tuple(checks)  # no checks at all (e.g. a window too small to test): insufficient_data
    names = [c.name for c in checks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"duplicate check names: {duplicates}")

    insufficient: list[str] = []
    tested: list[CheckLike] = []
    for check in checks:
        if check.insufficient_data:
            insufficient.append(check.name)
            continue
        p = check.p_value
        if p is None:
            raise InputError(f"check {check.name!r} has no p-value but claims enough data")
        if not (isinstance(p, int | float) and 0.0 <= float(p) <= 1.0):
            raise InputError(f"check {check.name!r} has an invalid p-value {p!r}")
        tested.append(check)

    raw = {c.name: float(c.p_value) for c in tested}  # type: ignore[arg-type]
    adjusted = dict(zip(raw, adjust_p_values(list(raw.values()), method), strict=True))

    breached, warned, suppressed, passed = [], [], [], []
    for check in tested:
        significant = adjusted[check.name] < alpha
        if significant and check.alert:
            breached.append(check.name)
        elif significant:
            warned.append(check.name)
        elif check.alert:
            suppressed.append(check.name)
        else:
            passed.append(check.name)

    status: Status
    if breached:
        status = "breach"
    elif warned:
        status = "warn"
    elif not tested:
        status = "insufficient_data"
    else:
        status = "ok"
    logger.info(
        "verdict %s: breached=%s warned=%s suppressed=%s insufficient=%s",
        status,
        breached,
        warned,
        suppressed,
        insufficient,
    )
    return MonitorVerdict(
        status=status,
        checks=checks,
        breached=tuple(breached),
        warned=tuple(warned),
        suppressed=tuple(suppressed),
        passed=tuple(passed),
        insufficient=tuple(insufficient),
        evidence={c.name: dict(c.evidence()) for c in checks},
        p_values=raw,
        adjusted_p_values=adjusted,
        alpha=alpha,
        method=method,
        created_at=created_at or datetime.now(UTC),
        window_start=window_start,
        window_end=window_end,
        window=dict(window or {}),
    )
