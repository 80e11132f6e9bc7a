"""Label-free accuracy estimate vs realised accuracy on the detection windows.

The windows are those of :mod:`bench.detection`, and the estimate is the one the product
computes there: the ``accuracy_estimate`` check of :func:`monitor.checks.label_free_checks`
(the calibrator fitted on the reference window's class probabilities and labels, the estimate
from the current window's probabilities alone, its 95 % interval). The realised accuracy uses
the current window's labels. Two naive baselines sit beside it: the stand-in classifier's mean
top-class confidence (uncalibrated), and "nothing changed" (the reference window's accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def summarise(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """MAE per family / group / shift / n for the estimate and the baselines, CI coverage."""
    if not windows:
        return {"available": False}

    def stats(sel: list[dict[str, Any]]) -> dict[str, float]:
        real = np.array([w["realised"] for w in sel])
        est = np.array([w["estimate"] for w in sel])
        lo = np.array([w["ci_low"] for w in sel])
        hi = np.array([w["ci_high"] for w in sel])
        return {
            "windows": len(sel),
            "mean_realised": float(real.mean()),
            "mean_estimate": float(est.mean()),
            "mae": float(np.abs(est - real).mean()),
            "bias": float((est - real).mean()),
            "mae_confidence": float(
                np.abs(np.array([w["mean_confidence"] for w in sel]) - real).mean()
            ),
            "mae_reference": float(
                np.abs(np.array([w["reference_accuracy"] for w in sel]) - real).mean()
            ),
            "ci_coverage": float(((lo <= real) & (real <= hi)).mean()),
            "ci_width": float((hi - lo).mean()),
            "alert_rate": float(np.mean([bool(w.get("estimate_alert")) for w in sel])),
            "realised_drop": float(
                (np.array([w["reference_accuracy"] for w in sel]) - real).mean()
            ),
        }

    by_family: dict[str, Any] = {}
    for fam in dict.fromkeys(w["family"] for w in windows):
        sel = [w for w in windows if w["family"] == fam]
        by_family[fam] = {"all": stats(sel)}
        for n in sorted({w["n"] for w in sel}):
            by_family[fam][n] = stats([w for w in sel if w["n"] == n])
    by_group = {
        f"{fam}: {grp}": stats([w for w in windows if w["family"] == fam and w["group"] == grp])
        for fam, grp in dict.fromkeys((w["family"], w["group"]) for w in windows)
    }
    by_shift = {
        s: stats([w for w in windows if w["shift"] == s])
        for s in dict.fromkeys(w["shift"] for w in windows)
    }
    return {
        "available": True,
        "overall": stats(windows),
        "by_family": by_family,
        "by_group": by_group,
        "by_shift": by_shift,
    }


def shortfalls(summary: dict[str, Any], min_drop: float = 0.03) -> list[str]:
    """Groups where accuracy fell by ``min_drop`` but the check mostly stayed silent, where the
    95 % interval mostly missed, or where a naive baseline tracks the realised accuracy better;
    one line each."""
    out = []
    for label, st in summary.get("by_group", {}).items():
        if st["realised_drop"] >= min_drop and st["alert_rate"] < 0.5:
            out.append(
                f"- **{label}: accuracy fell by {st['realised_drop']:.3f} on average, the check"
                f" alerted in {st['alert_rate']:.0%} of {st['windows']} windows** (estimate"
                f" {st['mean_estimate']:.3f} vs realised {st['mean_realised']:.3f})."
            )
        if st["ci_coverage"] < 0.8:
            out.append(
                f"- **{label}: the 95 % interval held the realised accuracy in only"
                f" {st['ci_coverage']:.0%} of {st['windows']} windows** (mean estimate"
                f" {st['mean_estimate']:.3f}, realised {st['mean_realised']:.3f}): the calibration"
                " does not carry over to this shift."
            )
        worse = [
            name
            for name, key in (
                ("uncalibrated confidence", "mae_confidence"),
                ("no change", "mae_reference"),
            )
            if st[key] < st["mae"] - 0.005
        ]
        if worse:
            out.append(
                f"- {label}: MAE {st['mae']:.3f} is worse than the naive baseline(s)"
                f" {', '.join(worse)}."
            )
    return out


def render_markdown(summary: dict[str, Any], header: str) -> str:
    """estimate.md: the overall MAE line, then per family, group, shift and window size."""
    lines = [header, "# Label-free accuracy estimate vs realised accuracy", ""]
    if not summary.get("available"):
        lines += ["monitor.estimate was not importable in this run: no estimate was measured.", ""]
        return "\n".join(lines)
    o = summary["overall"]
    lines += [
        "Per window of the detection benchmark: the `accuracy_estimate` check of"
        " `monitor.checks.label_free_checks` (its calibrator fitted on the reference window's class"
        " probabilities and labels, the estimate from the current window's probabilities alone,"
        " no labels), compared with the accuracy realised on the current window's labels."
        " Probabilities come from the logistic-regression head fitted on the source domain (the"
        " stand-in for the fine-tuned model's softmax). driftloop refuses windows below"
        " min_samples (no estimate), so n = 25 windows are absent.",
        "Baselines: *confidence* = mean top-class probability (uncalibrated); *no change* = the"
        " reference window's accuracy. *Alert rate*: share of windows where the check itself alerted"
        " (estimated drop >= min_drop and significant); *drop* = reference minus realised accuracy.",
        "",
        f"**Overall ({o['windows']} windows): MAE {o['mae']:.3f} (bias {o['bias']:+.3f}); "
        f"confidence baseline {o['mae_confidence']:.3f}; no-change baseline {o['mae_reference']:.3f}; "
        f"CI coverage {o['ci_coverage']:.2f}, mean CI width {o['ci_width']:.3f}.**",
        "",
        "![estimate](estimate.png)",
        "",
        "## Per shift family and group",
        "",
        "| family / group | windows | realised acc | drop | estimate | MAE | bias | MAE confidence"
        " | MAE no-change | CI coverage | alert rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(f"**{fam}**", d["all"]) for fam, d in summary["by_family"].items()]
    groups = summary.get("by_group", {})
    ordered: list[tuple[str, dict[str, float]]] = []
    for label, st in rows:
        ordered.append((label, st))
        fam = label.strip("*")
        ordered += [(f"&nbsp;&nbsp;{k}", v) for k, v in groups.items() if k.startswith(fam + ":")]
    for label, s in ordered:
        lines.append(
            f"| {label} | {s['windows']} | {s['mean_realised']:.3f} | {s['realised_drop']:+.3f} |"
            f" {s['mean_estimate']:.3f} | {s['mae']:.3f} | {s['bias']:+.3f} |"
            f" {s['mae_confidence']:.3f} | {s['mae_reference']:.3f} | {s['ci_coverage']:.2f} |"
            f" {s['alert_rate']:.2f} |"
        )
    lines += ["", "## Plainly: where the estimate falls short", ""]
    lines += shortfalls(summary) or [
        "- Nowhere: the estimate beats both baselines in every group and alerts on every group"
        " whose accuracy fell by min_drop or more."
    ]
    lines += [
        "",
        "## Per shift",
        "",
        "| shift | windows | realised acc | estimate | MAE | MAE confidence | MAE no-change | CI coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sh, s in summary["by_shift"].items():
        lines.append(
            f"| {sh} | {s['windows']} | {s['mean_realised']:.3f} | {s['mean_estimate']:.3f} | "
            f"{s['mae']:.3f} | {s['mae_confidence']:.3f} | {s['mae_reference']:.3f} | "
            f"{s['ci_coverage']:.2f} |"
        )
    lines += [
        "",
        "## MAE by window size",
        "",
        "| family | n | windows | MAE | CI coverage | CI width |",
        "|---|---|---|---|---|---|",
    ]
    for fam, d in summary["by_family"].items():
        for n, s in d.items():
            if n == "all":
                continue
            lines.append(
                f"| {fam} | {n} | {s['windows']} | {s['mae']:.3f} | {s['ci_coverage']:.2f} |"
                f" {s['ci_width']:.3f} |"
            )
    lines.append("")
    return "\n".join(lines)


def plot(windows: list[dict[str, Any]], outdir: Path) -> str | None:
    """Scatter of estimated vs realised accuracy, coloured by family."""
    if not windows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    for fam in dict.fromkeys(w["family"] for w in windows):
        sel = [w for w in windows if w["family"] == fam]
        ax.scatter(
            [w["realised"] for w in sel], [w["estimate"] for w in sel], s=6, alpha=0.4, label=fam
        )
    lo = min(min(w["realised"] for w in windows), min(w["estimate"] for w in windows)) - 0.02
    ax.plot([lo, 1], [lo, 1], "k:", lw=1)
    ax.set_xlabel("realised accuracy (current window labels)")
    ax.set_ylabel("label-free estimate")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title("monitor.estimate: estimated vs realised accuracy per window")
    fig.tight_layout()
    fig.savefig(outdir / "estimate.png", dpi=90)
    plt.close(fig)
    return "estimate.png"
