"""Report figures about training itself: every logged scalar (losses, D(real)/D(fake),
held-out metrics) against images seen, and quality against the guidance scale. Each takes
the report's PlotWriter (``w``: its summary, and ``_emit`` to write a figure)."""

from __future__ import annotations

import math
from typing import Any

from genbench.report.collect import RunRecord, flatten_scores
from genbench.report.columns import COLUMN, GUIDANCE
from genbench.report.figures import colors_for, new_figure, num
from genbench.storage.folder import LOG_BOOKKEEPING
from genbench.utils.naming import slug


# -- training curves ------------------------------------------------------------------
def loss_curves(w: Any) -> None:
    """Every logged training scalar against images seen, one figure per model and variant."""
    runs = [r for r in w.s.records if not r.is_real and r.model]
    by_key: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in runs:
        v = ", ".join(f"{k}={x}" for k, x in w.s.variants.get(r.run_id, {}).items())
        by_key.setdefault((str(r.experiment), str(r.model), v), []).append(r)
    for (exp, model, variant), recs in sorted(by_key.items()):
        logs = {r.run_id: r.train_log() for r in recs}
        keys = sorted(
            {
                k
                for log in logs.values()
                for rec in log
                for k, v in rec.items()
                if k not in LOG_BOOKKEEPING
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
            }
        )
        if not keys:
            continue
        ncols = min(3, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        fig, axes = new_figure(ncols, nrows, w=3.8, h=2.8)
        for ax in axes.flat[len(keys) :]:
            ax.set_visible(False)
        recs = sorted(recs, key=lambda r: (r.seed if r.seed is not None else -1, r.run_id))
        colors = colors_for([r.run_id for r in recs])
        for ax, k in zip(axes.flat, keys, strict=False):
            for r in recs:
                pts = [
                    (num(rec.get("kimg", rec.get("step"))), num(rec[k]))
                    for rec in logs[r.run_id]
                    if k in rec
                ]
                pts = [(x, y) for x, y in pts if not (math.isnan(x) or math.isnan(y))]
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        "-o" if len(pts) < 4 else "-",
                        ms=3,
                        lw=1,
                        color=colors[r.run_id],
                        label=f"seed {r.seed}" + ("" if r.done else f" ({r.status})"),
                    )
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("kimg", fontsize=8)
            ax.tick_params(labelsize=7)
        axes.flat[0].legend(fontsize=7)
        label = model + (f" [{variant}]" if variant else "")
        fig.suptitle(f"{exp}: {label} training curves", fontsize=10)
        w._emit(
            fig,
            f"train-{slug(exp)}-{slug(model)}" + (f"-{slug(variant, limit=40)}" if variant else ""),
            f"Training curves, {exp}: {label}",
            "Every logged scalar from train_log.jsonl against training images seen, one line per seed.",
        )


# -- classifier-free guidance ------------------------------------------------------------
def cfg_curves(w: Any) -> None:
    """Quality against the guidance scale, from each run's cfg_sweep.json."""
    recs = [(r, r.cfg_sweep()) for r in w.s.records if r.done]
    recs = [(r, pts) for r, pts in recs if pts]
    by_model: dict[tuple[str, str], list[tuple[RunRecord, list[dict[str, Any]]]]] = {}
    for r, pts in recs:
        by_model.setdefault((str(r.experiment), str(r.model)), []).append((r, pts))
    for (exp, model), items in sorted(by_model.items()):
        have = [
            k
            for k in GUIDANCE
            if any(
                not math.isnan(num(flatten_scores(p.get("scores") or {}).get(k)))
                for _, pts in items
                for p in pts
            )
        ]
        # Guidance trades fidelity for class adherence: one of each where both exist.
        lower = [k for k in have if COLUMN[k].better == "lower"]
        higher = [k for k in have if COLUMN[k].better != "lower"]
        present = (lower[:1] + higher[:1] + lower[1:] + higher[1:])[:2]
        if not present:
            continue
        fig, axes = new_figure(len(present), w=4.2, h=3.2)
        colors = colors_for([r.run_id for r, _ in items])
        for ax, k in zip(axes.flat, present, strict=True):
            for r, pts in items:
                xy = sorted(
                    (num(p["scale"]), num(flatten_scores(p.get("scores") or {}).get(k)))
                    for p in pts
                )
                xy = [(x, y) for x, y in xy if not (math.isnan(x) or math.isnan(y))]
                if xy:
                    ax.plot(
                        *zip(*xy, strict=True),
                        "o-",
                        ms=3,
                        color=colors[r.run_id],
                        label=f"seed {r.seed}",
                    )
            col = COLUMN.get(k)
            ax.set_xlabel("guidance scale")
            ax.set_ylabel(f"{col.label if col else k} ({col.better if col else ''} is better)")
            ax.legend(fontsize=7)
        fig.suptitle(f"{exp}: {model}, quality vs guidance scale", fontsize=10)
        w._emit(
            fig,
            f"cfg-{slug(exp)}-{slug(model)}",
            f"Guidance scale, {exp}: {model}",
            "From cfg_sweep.json: the guidance scale trades class consistency against diversity.",
        )
