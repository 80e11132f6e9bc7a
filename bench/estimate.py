"""Label-free accuracy estimate (monitor.estimate) vs realised accuracy on the detection windows.

The windows are those of :mod:`bench.detection`: per window the calibrator is fitted on the
reference window's class probabilities and labels, the estimate is computed on the current
window's probabilities alone, and the realised accuracy uses the current window's labels.
Two naive baselines sit beside it: the head's mean top-class confidence (uncalibrated), and
"nothing changed" (the reference window's accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def summarise(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """MAE per family / kind / n for the estimate and the two baselines, and CI coverage."""
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
        }

    by_family: dict[str, Any] = {}
    for fam in dict.fromkeys(w["family"] for w in windows):
        sel = [w for w in windows if w["family"] == fam]
        by_family[fam] = {"all": stats(sel)}
        for n in sorted({w["n"] for w in sel}):
            by_family[fam][n] = stats([w for w in sel if w["n"] == n])
    by_shift = {
        s: stats([w for w in windows if w["shift"] == s])
        for s in dict.fromkeys(w["shift"] for w in windows)
    }
    return {
        "available": True,
        "overall": stats(windows),
        "by_family": by_family,
        "by_shift": by_shift,
    }


def render_markdown(summary: dict[str, Any], header: str) -> str:
    lines = [header, "# Label-free accuracy estimate vs realised accuracy", ""]
    if not summary.get("available"):
        lines += ["monitor.estimate was not importable in this run: no estimate was measured.", ""]
        return "\n".join(lines)
    o = summary["overall"]
    lines += [
        "Per window: `fit_calibrator` on the reference window's class probabilities and labels,"
        " `estimate_accuracy` on the current window's probabilities (no labels), compared with the"
        " accuracy realised on the current window's labels. Probabilities come from the logistic-"
        "regression head fitted on the source domain (stand-in for the fine-tuned model's softmax).",
        "Baselines: *confidence* = mean top-class probability of the head (uncalibrated);"
        " *no change* = the reference window's accuracy.",
        "",
        f"**Overall ({o['windows']} windows): MAE {o['mae']:.3f} (bias {o['bias']:+.3f}); "
        f"confidence baseline {o['mae_confidence']:.3f}; no-change baseline {o['mae_reference']:.3f}; "
        f"CI coverage {o['ci_coverage']:.2f}, mean CI width {o['ci_width']:.3f}.**",
        "",
        "![estimate](estimate.png)",
        "",
        "## Per shift family",
        "",
        "| family | windows | realised acc | estimate | MAE | bias | MAE confidence | MAE no-change | CI coverage |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, d in summary["by_family"].items():
        s = d["all"]
        lines.append(
            f"| {fam} | {s['windows']} | {s['mean_realised']:.3f} | {s['mean_estimate']:.3f} | "
            f"{s['mae']:.3f} | {s['bias']:+.3f} | {s['mae_confidence']:.3f} | "
            f"{s['mae_reference']:.3f} | {s['ci_coverage']:.2f} |"
        )
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
        "## MAE by window size (all families)",
        "",
        "| family | n | windows | MAE | CI coverage | CI width |",
        "|---|---|---|---|---|---|",
    ]
    for fam, d in summary["by_family"].items():
        for n, s in d.items():
            if n == "all":
                continue
            lines.append(
                f"| {fam} | {n} | {s['windows']} | {s['mae']:.3f} | {s['ci_coverage']:.2f} | {s['ci_width']:.3f} |"
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
