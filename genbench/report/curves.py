"""Quality against training compute: each run's KID at its snapshots and at the end,
who leads at each budget, where the leaders change, and which curves have not
converged.

KID is the curve's metric because it is unbiased in the sample count: a snapshot's
64 samples and the final set's 500 measure the same quantity (FID's bias would
bend the curve where N changes). The leader at a budget follows the final
verdict's separation rules (:func:`genbench.report.verdict.compare`), applied to
the models' points at that budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import genbench.report.verdict as verdict
from genbench.report.collect import RunRecord
from genbench.utils.files import read_json

METRIC = "kid"
#: (key, label, unit divisor, unit) of the three compute axes.
AXES = (
    ("kimg", "training images seen", 1.0, "kimg"),
    ("flops", "training FLOPs", 1e12, "TFLOP"),
    ("seconds", "training seconds (inside train steps)", 1.0, "s"),
)
#: "Not converged": over the last doubling of compute the curve still fell by more than
#: this fraction of its value, and by more than the final point's sampling half-interval.
STEEP = 0.2


@dataclass
class Point:
    kimg: float
    flops: float | None
    seconds: float | None
    value: float
    n: int | None
    boot: dict[str, Any] = field(default_factory=dict)  # bootstrap.json's content, if any

    def x(self, axis: str) -> float | None:
        v = getattr(self, axis)
        return None if v is None or not math.isfinite(v) else float(v)


def _kid(scores: Any) -> float | None:
    k = scores.get(METRIC) if isinstance(scores, dict) else None
    v = k.get("mean") if isinstance(k, dict) else k
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def run_points(rec: RunRecord) -> list[Point]:
    """The run's snapshots, then its final sample set, in training order."""
    pts = []
    for s in sorted(rec.snapshots(), key=lambda r: r.get("step", 0)):
        v = _kid(s.get("scores"))
        if v is None:
            continue
        boot: dict[str, Any] = {}
        if s.get("images"):
            f = rec.path / str(s["images"]) / "bootstrap.json"
            boot = read_json(f) if f.is_file() else {}
        pts.append(
            Point(s.get("kimg", 0.0), s.get("flops"), s.get("train_seconds"), v, s.get("n"), boot)
        )
    train = rec.metrics.get("train") or {}
    final = _kid(rec.metrics.get("scores"))
    if final is not None and train.get("images_seen"):
        n = (rec.metrics.get("protocol") or {}).get("n_generated")
        pts.append(
            Point(
                train["images_seen"] / 1000,
                train.get("flops_total"),
                train.get("train_seconds"),
                final,
                n,
                rec.bootstrap(),
            )
        )
    return pts


class _AtBudget:
    """One run at one budget point, shaped like a RunRecord for verdict.compare."""

    def __init__(self, rec: RunRecord, p: Point) -> None:
        self.metrics = {
            "scores": {METRIC: {"mean": p.value}},
            "copies": rec.metrics.get("copies"),
            "derived_from_training": rec.metrics.get("derived_from_training"),
        }
        self._boot = p.boot

    def bootstrap(self) -> dict[str, Any]:
        return self._boot


@dataclass
class Budget:
    """One budget point: each model's mean value there and who leads."""

    x: dict[str, float]  # axis -> the models' mean position (the budget's own axis aligns)
    values: dict[str, float]  # model -> mean KID over seeds
    leader: str | None  # best model, when the separation rules back it
    claim: str  # "ddpm beats dcgan", "ddpm and dcgan: not separated", ...


@dataclass
class Curves:
    """A group's curves: per model, the seeds' points; budgets, crossovers, convergence."""

    budget_axis: str  # kimg, flops or seconds: the experiment's train.budget
    models: dict[str, list[list[Point]]]
    budgets: list[Budget] = field(default_factory=list)
    crossovers: list[str] = field(default_factory=list)
    not_converged: dict[str, str] = field(default_factory=dict)  # model -> why
    crossings: list[str] = field(default_factory=list)  # any two mean curves that cross

    def metric_text(self) -> str:
        """What the curves measure, for the headline: the metric and the budget's unit."""
        label = next(a for a in AXES if a[0] == self.budget_axis)[1]
        return f"KID; the budget is matched in {label}"

    def for_json(self) -> dict[str, Any]:
        return {
            "metric": METRIC,
            "budget_axis": self.budget_axis,
            "budgets": [b.__dict__ for b in self.budgets],
            "crossovers": self.crossovers,
            "crossings": self.crossings,
            "not_converged": self.not_converged,
            "points": {
                m: [[p.__dict__ | {"boot": None} for p in pts] for pts in seeds]
                for m, seeds in self.models.items()
            },
        }


def budget_axis(config: dict[str, Any]) -> str:
    unit = (config.get("train") or {}).get("budget", "kimg")
    return {"tflop": "flops", "seconds": "seconds"}.get(unit, "kimg")


def build(models: dict[str, list[RunRecord]]) -> Curves | None:
    """Curves for a group's models (label -> its seeds' records); None without snapshots."""
    pts = {m: [run_points(r) for r in recs] for m, recs in models.items()}
    if not pts or all(max((len(p) for p in seeds), default=0) < 2 for seeds in pts.values()):
        return None
    first = next(iter(models.values()))[0]
    curves = Curves(budget_axis(first.config), pts)
    curves.budgets = _budgets(models, pts)
    curves.crossovers = _crossovers(curves.budgets, curves.budget_axis)
    curves.crossings = _pair_crossings(curves.budgets, curves.budget_axis)
    curves.not_converged = {
        m: why for m, seeds in pts.items() if (why := _still_falling(seeds, curves.budget_axis))
    }
    return curves


def _budgets(models: dict[str, list[RunRecord]], pts: dict[str, list[list[Point]]]) -> list[Budget]:
    """The points every run shares, by position: snapshots at the same fractions of the
    same budget (and the final set) fall at the same budget for every model."""
    lengths = {len(p) for seeds in pts.values() for p in seeds}
    if len(lengths) != 1:
        return []
    out = []
    for i in range(lengths.pop()):
        at = {
            m: [_AtBudget(r, p[i]) for r, p in zip(models[m], seeds, strict=True)]
            for m, seeds in pts.items()
        }
        values = {m: float(np.mean([p[i].value for p in seeds])) for m, seeds in pts.items()}
        xs = {
            axis: float(np.mean(vals))
            for axis, *_ in AXES
            if (vals := [p[i].x(axis) for seeds in pts.values() for p in seeds])
            and all(v is not None for v in vals)
        }
        out.append(_leader(at, values, xs))
    return out


def _leader(at: dict[str, list[Any]], values: dict[str, float], xs: dict[str, float]) -> Budget:
    order = sorted(values, key=values.get)
    if len(order) < 2:
        return Budget(xs, values, None, "")  # one model leads nothing
    # The best model leads when the separation rules back it against the runner-up.
    p = verdict.compare(order[0], at[order[0]], order[1], at[order[1]], METRIC)
    leader = p.winner if p.verdict in (verdict.BEATS, verdict.SAMPLING_AHEAD) else None
    return Budget(xs, values, leader, verdict.claim(p))


def fmt_x(x: float, axis: str) -> str:
    _, _, div, unit = next(a for a in AXES if a[0] == axis)
    return f"{x / div:.3g} {unit}"


def _crossovers(budgets: Sequence[Budget], axis: str) -> list[str]:
    """Where the separated leader changes: "dcgan leads up to 3.8 TFLOP, ddpm from 7.5"."""
    runs: list[tuple[str, float, float]] = []  # (leader, first x, last x)
    for b in budgets:
        if b.leader is None or axis not in b.x:
            continue
        x = b.x[axis]
        if runs and runs[-1][0] == b.leader:
            runs[-1] = (b.leader, runs[-1][1], x)
        else:
            runs.append((b.leader, x, x))
    out = []
    for (a, _, a_end), (b, b_start, _) in itertools.pairwise(runs):
        out.append(
            f"{a} leads up to {fmt_x(a_end, axis)}, {b} from {fmt_x(b_start, axis)} "
            f"(the curves cross in between)"
        )
    return out


def _pair_crossings(budgets: Sequence[Budget], axis: str) -> list[str]:
    """Pairs of mean curves whose order flips between two budgets ("dcgan passes ddpm
    between 10 and 20 TFLOP"); the leader rows say which of these the data separates."""
    out = []
    models = list(budgets[0].values) if budgets else []
    for a, b in itertools.combinations(models, 2):
        for lo, hi in itertools.pairwise(budgets):
            before = lo.values[a] - lo.values[b]
            after = hi.values[a] - hi.values[b]
            if before * after < 0 and axis in lo.x and axis in hi.x:
                ahead, behind = (a, b) if after < 0 else (b, a)
                out.append(
                    f"{ahead} passes {behind} between {fmt_x(lo.x[axis], axis)} and "
                    f"{fmt_x(hi.x[axis], axis)}"
                )
    return out


def _still_falling(seeds: list[list[Point]], axis: str) -> str:
    """Why the model's mean curve has not converged, or "" if it has flattened."""
    if not seeds or any(len(p) < 2 for p in seeds):
        return ""
    prev = float(np.mean([p[-2].value for p in seeds]))
    last = float(np.mean([p[-1].value for p in seeds]))
    x0 = np.mean([p[-2].x(axis) or math.nan for p in seeds])
    x1 = np.mean([p[-1].x(axis) or math.nan for p in seeds])
    if not (x1 > x0 > 0) or prev <= 0:
        return ""
    per_doubling = (prev - last) / prev / math.log2(x1 / x0)
    ci = seeds[0][-1].boot.get("kid") if len(seeds) == 1 else None
    half = (np.percentile(ci, 97.5) - np.percentile(ci, 2.5)) / 2 if ci else 0.0
    if per_doubling > STEEP and prev - last > half:
        return (
            f"KID fell {100 * per_doubling:.0f}% per doubling of compute at the end "
            f"({prev:.3g} -> {last:.3g})"
        )
    return ""


def markdown(c: Curves) -> str:
    """The table of who leads at each budget, then crossovers and convergence."""
    models = list(c.models)
    axis_label = next(a for a in AXES if a[0] == c.budget_axis)[1]
    lines = [
        f"KID (lower is better) at each budget; budget = {axis_label}. Leader: the best "
        "model where the final verdict's separation rules back it against the runner-up.",
        "",
        "| budget | " + " | ".join(models) + " | leader |",
        "|---|" + "---:|" * len(models) + "---|",
    ]
    for b in c.budgets:
        where = fmt_x(b.x[c.budget_axis], c.budget_axis) if c.budget_axis in b.x else "?"
        cells = [f"{b.values[m]:.4f}" for m in models]
        lines.append(f"| {where} | " + " | ".join(cells) + f" | {b.leader or b.claim or '-'} |")
    lines.append("")
    for s in c.crossovers:
        lines.append(f"- {s}")
    if not c.crossovers and c.budgets and len(models) > 1:
        leaders = {b.leader for b in c.budgets if b.leader}
        lines.append(
            f"- {leaders.pop()} leads at every separated budget"
            if len(leaders) == 1
            else "- no budget separates the leaders"
        )
    lines += [f"- mean curves cross: {x}" for x in c.crossings]
    for m, why in c.not_converged.items():
        lines.append(f"- {m}: not converged ({why})")
    return "\n".join(lines) + "\n"


def sentence(c: Curves) -> str:
    """The headline's clause on budgets: crossovers, else the one leader; unconverged models."""
    parts = list(c.crossovers)
    if not parts:
        leaders = [b.leader for b in c.budgets if b.leader]
        if leaders and len(set(leaders)) == 1:
            parts.append(f"{leaders[0]} leads at every separated budget point")
    parts += c.crossings
    if c.not_converged:
        parts.append("not converged at the end: " + ", ".join(c.not_converged))
    return "; ".join(parts)
