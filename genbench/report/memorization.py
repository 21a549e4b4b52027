"""The report's memorization view: for an experiment whose runs train on subsets of the
training split (``data.train_subset``), the copied fraction against the number of training
images, one line per model, with Gu et al.'s nearest-neighbour criterion beside the audit and
FID/KID at each size (memorization lowers them: the table says so next to the audit)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from genbench.report.collect import RunRecord
from genbench.report.figures import Figure, colors_for, log_x, new_figure, num, save_figure

HEADER = (
    "model",
    "training images",
    "epochs",
    "FID",
    "KID",
    "copied: per sample",
    "copied: membership (pixels)",
    "Gu et al. (d1/d2 < 1/3)",
    "audit flags",
    "Gu et al. flags",
)
NOTE = (
    "One row per run trained on a subset of the training split (data.train_subset), at the "
    "same number of steps. Copied fractions are the copy audit's, with 95% intervals; Gu et "
    "al.'s criterion (TMLR 2025) counts samples whose nearest training image is under a third "
    "of the distance to the second nearest (raw pixels), next to the same share among fresh "
    "held-out images, and flags when its interval lies above theirs. A model that reproduces "
    "its training images gets a lower FID/KID for it: read them beside the copied fraction."
)

TWIN_NOTE = (
    "The two-model check (Kadkhodaie et al. 2024): two runs of a model trained on disjoint "
    "subsets of the same size (data.train_subset_part 0 and 1), sampled from the same noise. "
    "RMS pixel distances (0 to 1): between the two models' samples from one noise, and from "
    "each sample to its own model's nearest training image. A model that generalizes draws "
    "nearly the same image from the same noise (its twin is closer than its training set); a "
    "model that memorizes draws its own training images."
)


def _bounds(ci: Any) -> tuple[float, float]:
    if not isinstance(ci, (list, tuple)) or len(ci) < 2:
        return math.nan, math.nan
    return num(ci[0]), num(ci[1])


def _interval(e: Any) -> tuple[float, float, float]:
    if not isinstance(e, dict):
        return math.nan, math.nan, math.nan
    return (num(e.get("fraction")), *_bounds(e.get("ci95")))


def _cell(f: float, lo: float, hi: float) -> str:
    if math.isnan(f):
        return "–"
    return f"{f:.3f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(lo) else f"{f:.3f}"


def _subset_experiments(records: Sequence[RunRecord]) -> set[str | None]:
    return {
        r.experiment
        for r in records
        if isinstance(r.metrics.get("data"), dict) and r.metrics["data"].get("train_subset")
    }


def memorization_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per finished, audited model run of an experiment that trains on subsets."""
    experiments = _subset_experiments(records)
    rows = [_row(r) for r in records if r.experiment in experiments and r.done and not r.is_real]
    rows = [r for r in rows if r is not None]
    return sorted(
        rows,
        key=lambda r: (
            str(r["experiment"]),
            r["model"],
            r["n_train"],
            r["block"],
            r["epochs"] or 0,
            r["seed"],
        ),
    )


def _row(rec: RunRecord) -> dict[str, Any] | None:
    data, cp = rec.metrics.get("data") or {}, rec.metrics.get("copies")
    n_train = data.get("n_train")
    if not isinstance(cp, dict) or not isinstance(n_train, int) or n_train <= 0:
        return None
    cf = cp.get("copied_fraction") or {}
    per_sample = _interval(cf.get("per_sample"))
    pixels = _interval((cf.get("membership") or {}).get("pixels"))
    gu = cp.get("nn_ratio") or {}
    gu_f, gu_lo, gu_hi = _interval(gu)
    fresh_lo, fresh_hi = _bounds(gu.get("fresh_ci95"))
    scores = rec.metrics.get("scores") or {}
    kid = scores.get("kid")
    seen = (rec.metrics.get("train") or {}).get("images_seen")
    grid = cp.get("grid") or {}
    return {
        "experiment": rec.experiment,
        "model": rec.model,
        "seed": rec.seed,
        "run_id": rec.run_id,
        "n_train": n_train,
        "block": int(data.get("train_subset_part", 0)),  # data.train_subset_part
        "epochs": round(seen / n_train, 1) if isinstance(seen, (int, float)) else None,
        "fid": num(scores.get("fid")),
        "kid": num(kid.get("mean") if isinstance(kid, dict) else kid),
        "per_sample": per_sample,
        "membership_pixels": pixels,
        "gu": (gu_f, gu_lo, gu_hi),
        "gu_fresh": (num(gu.get("fresh_fraction")), fresh_lo, fresh_hi),
        "audit_flagged": bool(grid.get("flagged", cp.get("flagged"))),
        # Gu et al. give no test; here: the interval lies wholly above the fresh images' own.
        "gu_flagged": bool(gu_lo > fresh_hi),  # NaN compares False
    }


def _display(r: dict[str, Any]) -> dict[str, str]:
    fresh = r["gu_fresh"][0]
    return {
        "model": f"{r['model']} s{r['seed']}" + (f", block {r['block']}" if r["block"] else ""),
        "training images": str(r["n_train"]),
        "epochs": f"{r['epochs']:g}" if r["epochs"] is not None else "–",
        "FID": f"{r['fid']:.1f}" if not math.isnan(r["fid"]) else "–",
        "KID": f"{r['kid']:.4f}" if not math.isnan(r["kid"]) else "–",
        "copied: per sample": _cell(*r["per_sample"]),
        "copied: membership (pixels)": _cell(*r["membership_pixels"]),
        "Gu et al. (d1/d2 < 1/3)": _cell(*r["gu"])
        + (f" (fresh {fresh:.3f})" if not math.isnan(fresh) else ""),
        "audit flags": "yes" if r["audit_flagged"] else "no",
        "Gu et al. flags": "yes" if r["gu_flagged"] else "no",
    }


def for_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with intervals as {fraction, ci95} and no NaN (summary.json)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return None if math.isnan(v) else v
        if isinstance(v, tuple):
            return {"fraction": clean(v[0]), "ci95": [clean(v[1]), clean(v[2])]}
        return v

    return [{k: clean(v) for k, v in r.items()} for r in rows]


def _twin_display(r: dict[str, Any]) -> dict[str, str]:
    own = r["own_train_median"]
    return {
        "model": f"{r['model']} s{r['seed']}",
        "training images (each)": str(r["n_train"]),
        "samples": str(r["n"]),
        "twin's sample (median)": f"{r['between_median']:.3f}",
        "own nearest training image (median)": f"{own['a']:.3f} / {own['b']:.3f}",
        "closer to the twin": f"{r['closer_to_twin']:.1%}",
    }


def _tables(rows: list[dict[str, Any]], twins: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    return [[_display(r) for r in rows], [_twin_display(r) for r in twins]]


def memorization_markdown(rows: list[dict[str, Any]], twins: Sequence[dict[str, Any]] = ()) -> str:
    if not rows and not twins:
        return ""
    lines = []
    for note, shown in zip((NOTE, TWIN_NOTE), _tables(rows, list(twins)), strict=True):
        if shown:
            head = list(shown[0])
            lines += [note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(s[h] for h in head) + " |" for s in shown] + [""]
    return "\n".join(lines)


def memorization_html(rows: list[dict[str, Any]], twins: Sequence[dict[str, Any]] = ()) -> str:
    if not rows and not twins:
        return ""
    parts = ['<h2 id="memorization">Memorization</h2>']
    for note, shown in zip((NOTE, TWIN_NOTE), _tables(rows, list(twins)), strict=True):
        if shown:
            head = "".join(f"<th>{escape(h)}</th>" for h in shown[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in s.values()) + "</tr>"
                for s in shown
            )
            parts.append(f'<p class="small">{escape(note)}</p>')
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts)


def _series(ax: Any, rows: list[dict[str, Any]], x_key: str, color: str, model: str) -> None:
    """The audit's per-sample estimate (solid) and Gu et al.'s share (dashed), with 95% bars."""
    rows = sorted(rows, key=lambda r: r[x_key])
    x = [r[x_key] for r in rows]
    for key, style, what in (("per_sample", "-", "audit"), ("gu", "--", "Gu et al.")):
        f = [r[key][0] for r in rows]
        err = [
            [max(0.0, v - r[key][1]) for v, r in zip(f, rows, strict=True)],
            [max(0.0, r[key][2] - v) for v, r in zip(f, rows, strict=True)],
        ]
        ax.errorbar(
            x, f, yerr=err, fmt="o" + style, color=color, capsize=3, label=f"{model}: {what}"
        )


def memorization_figure(rows: list[dict[str, Any]], plots_dir: Path) -> Figure | None:
    """Copied fraction against training images (each model's longest budget per size) and,
    where one size was trained for several budgets, against epochs (training time)."""
    models = sorted({r["model"] for r in rows})
    longest: dict[tuple[str, int], dict[str, Any]] = {}
    by_size: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["block"]:
            continue  # the curves follow the nested subsets (block 0)
        key = (r["model"], r["n_train"])
        by_size.setdefault(key, []).append(r)
        if key not in longest or (r["epochs"] or 0) > (longest[key]["epochs"] or 0):
            longest[key] = r
    sizes = len({n for _, n in longest}) >= 2
    times = {k: v for k, v in by_size.items() if len({r["epochs"] for r in v}) >= 2}
    if not sizes and not times:
        return None
    colors = colors_for(models)
    fig, axes = new_figure(ncols=int(sizes) + int(bool(times)), w=5.0, h=3.6)
    panels = iter(axes[0])
    if sizes:
        ax = next(panels)
        for m in models:
            _series(ax, [v for (mm, _), v in longest.items() if mm == m], "n_train", colors[m], m)
        log_x(ax)
        ax.set_xlabel("training images (data.train_subset)")
    if times:
        ax = next(panels)
        for (m, n), rs in sorted(times.items()):
            _series(ax, rs, "epochs", colors[m], f"{m}, {n} images")
        log_x(ax)
        ax.set_xlabel("epochs (images seen / training images)")
    for ax in axes[0]:
        ax.set_ylabel("copied fraction of samples")
        ax.legend(fontsize=7)
    png, svg = save_figure(fig, plots_dir, "memorization")
    return Figure(
        "memorization",
        "Copied fraction against training-set size and training time",
        png,
        svg,
        caption="Solid: the copy audit's per-sample copied fraction; dashed: Gu et al.'s "
        "d1/d2 < 1/3 share. Bars: 95% intervals.",
    )
