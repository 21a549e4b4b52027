"""The quality-vs-training-compute figure: KID against images seen, training FLOPs and
training seconds, one curve per model (mean over seeds, with its band), the
real-data floor dashed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from genbench.report.curves import AXES, Curves, Point


def _band(seeds: list[list[Point]], i: int) -> tuple[float, float] | None:
    """Seeds' range at point i; with one seed its bootstrap interval (sampling only)."""
    if len(seeds) > 1:
        vals = [p[i].value for p in seeds]
        return min(vals), max(vals)
    reps = seeds[0][i].boot.get("kid")
    if not isinstance(reps, list) or len(reps) < 2:
        return None
    return float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def draw(axes: Any, curves: Curves, colors: dict[str, str], floor: float | None) -> str:
    """Draw the three panels into ``axes`` (a row of three); returns the caption."""
    one_seed = all(len(s) == 1 for s in curves.models.values())
    for ax, (axis, label, div, unit) in zip(axes, AXES, strict=True):
        for model, seeds in curves.models.items():
            n = min(len(p) for p in seeds)
            xs, ys, lo, hi = [], [], [], []
            for i in range(n):
                x = [p[i].x(axis) for p in seeds]
                if any(v is None for v in x):
                    continue
                xs.append(float(np.mean(x)) / div)
                ys.append(float(np.mean([p[i].value for p in seeds])))
                band = _band(seeds, i)
                lo.append(band[0] if band else math.nan)
                hi.append(band[1] if band else math.nan)
            if not xs:
                continue
            c = colors.get(model, "gray")
            ax.plot(xs, ys, "-o", ms=3, lw=1.3, color=c, label=model)
            ax.fill_between(xs, lo, hi, color=c, alpha=0.15, lw=0)
            if model in curves.not_converged:
                ax.annotate("not converged", (xs[-1], ys[-1]), fontsize=6, color=c,
                            textcoords="offset points", xytext=(3, 3))  # fmt: skip
        if floor is not None and math.isfinite(floor):
            ax.axhline(floor, color="black", ls="--", lw=0.8, label="real data")
        # Budgets are spaced geometrically: log axes, without overlapping minor labels.
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{label} ({unit})", fontsize=8)
        ax.set_ylabel("KID (lower is better)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    band = (
        "bands: the bootstrap's 95% sampling interval (one training seed)"
        if one_seed
        else "bands: the training seeds' range"
    )
    ns = sorted({p.n for seeds in curves.models.values() for s in seeds for p in s if p.n})
    return (
        f"KID at each snapshot and at the end of training (N = {', '.join(map(str, ns))} "
        f"samples; KID is unbiased in N, so the points share one scale), against three "
        f"measures of training compute; {band}; dashed: the real-data floor. 'not "
        f"converged': still falling steeply at the last point (see the curves table)."
    )
