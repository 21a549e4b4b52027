"""Report figures (PNG and SVG): metric bars with CIs, quality vs training compute,
quality vs sampling cost with its Pareto front, training curves, sweep heatmaps
and classifier-free-guidance scale curves.

Figures are built with matplotlib's object API (no pyplot state, Agg canvas), so
rendering never needs a display and never touches a global backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import genbench.report.memorization as memorization
import genbench.report.training_plots as training_plots
from genbench.report.collect import RunRecord
from genbench.report.columns import COLUMN, QUALITY, is_true, model_label
from genbench.report.figures import Figure, colors_for, log_x, new_figure, num, save_figure
from genbench.report.stats import Group, Summary, primary_metric
from genbench.utils.naming import slug


class PlotWriter:
    """Writes every figure the runs support into ``out_dir/plots``; notes what it skipped."""

    def __init__(self, summary: Summary, out_dir: Path) -> None:
        self.s = summary
        self.dir = out_dir / "plots"
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.by_id = {r.run_id: r for r in summary.records}
        # One colour per model across every figure.
        t = summary.table
        means = t[t["row"] == "mean"] if not t.empty and "row" in t else t
        self.colors = colors_for(sorted({model_label(r) for _, r in means.iterrows()}))
        self._names: set[str] = set()

    def _emit(self, fig: Any, name: str, title: str, caption: str = "") -> None:
        base, k = name, 1
        while name in self._names:  # two labels may share a slug
            k += 1
            name = f"{base}-{k}"
        self._names.add(name)
        png, svg = save_figure(fig, self.dir, name)
        self.figures.append(Figure(name, title, png, svg, caption))

    def _try(self, what: str, fn: Callable[[], None]) -> None:
        # One odd run folder must not cost the whole report its other figures.
        try:
            fn()
        except Exception as exc:
            self.notes.append(f"{what}: skipped ({type(exc).__name__}: {exc})")

    def write_all(self) -> list[Figure]:
        for g in self.s.groups:
            tag = slug(f"{g.experiment}-{g.fingerprint or 'unscored'}")
            if g.fingerprint:
                self._try(f"metric bars {g.title}", lambda g=g, t=tag: self.metric_bars(g, t))
                self._try(f"training compute {g.title}", lambda g=g, t=tag: self.vs_compute(g, t))
                self._try(f"sampling cost {g.title}", lambda g=g, t=tag: self.vs_sampling(g, t))
                self._try(f"sweep {g.title}", lambda g=g, t=tag: self.sweeps(g, t))
        self._try("training curves", self.loss_curves)
        self._try("guidance scale", self.cfg_curves)
        self._try("memorization", self.memorization)
        return self.figures

    # -- metric bars -------------------------------------------------------------------
    def metric_bars(self, g: Group, tag: str) -> None:
        agg = self.s.rows(g, "mean")
        if agg.empty:
            return
        seeds = self.s.rows(g, "run")
        real = self.s.rows(g, "real")
        keys = [
            k for k in QUALITY if k in agg and pd.to_numeric(agg[k], errors="coerce").notna().any()
        ]
        if not keys:
            return
        labels = [model_label(r) for _, r in agg.iterrows()]
        flagged = [is_true(v) for v in agg.get("flagged", pd.Series([False] * len(agg)))]
        colors = self.colors
        ncols = min(4 if len(labels) <= 3 else 3, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        fig, axes = new_figure(ncols, nrows, w=min(5.5, max(3.0, 0.55 * len(labels) + 1.8)), h=3.2)
        for ax in axes.flat[len(keys) :]:
            ax.set_visible(False)
        for ax, key in zip(axes.flat, keys, strict=False):
            col = COLUMN[key]
            x = np.arange(len(labels))
            means = [num(v) for v in agg[key]]
            cis = [num(v) for v in agg.get(f"{key}_ci95", pd.Series([math.nan] * len(agg)))]
            have = [i for i, m in enumerate(means) if not math.isnan(m)]
            bars = ax.bar(
                [x[i] for i in have],
                [means[i] for i in have],
                color=[colors[labels[i]] for i in have],
                alpha=0.8,
            )
            _flag_and_sampling(ax, bars, agg, key, x=x, have=have, flagged=flagged)
            spread = [i for i in have if cis[i] > 0]  # NaN (one seed) compares False
            if spread:
                ax.errorbar(
                    [x[i] for i in spread],
                    [means[i] for i in spread],
                    yerr=[cis[i] for i in spread],
                    fmt="none",
                    ecolor="black",
                    elinewidth=1,
                    capsize=4,
                )
            ax.set_xlim(-0.6, len(labels) - 0.4)
            for i in sorted(set(range(len(labels))) - set(have)):
                ax.text(
                    i,
                    0.5,
                    "n/a",
                    ha="center",
                    va="center",
                    transform=ax.get_xaxis_transform(),
                    color="gray",
                )
            _seed_dots(ax, agg, seeds, key)
            if not real.empty and pd.notna(real.iloc[0].get(key)):
                ax.axhline(float(real.iloc[0][key]), color="gray", ls="--", lw=1, label="real data")
                ax.legend(fontsize=7, loc="best")
            ax.set_xticks(
                x,
                labels,
                rotation=30 if len(labels) > 2 else 0,
                ha="right" if len(labels) > 2 else "center",
                fontsize=8,
            )
            ax.set_title(f"{col.label} ({'↓' if col.better == 'lower' else '↑'})", fontsize=10)
        fig.suptitle(f"{g.title}: mean ± 95% CI over seeds (dots: seeds)", fontsize=10)
        self._emit(
            fig,
            f"metrics-{tag}",
            f"Metrics, {g.title}",
            "Bars: mean over training seeds; black whiskers: 95% Student-t interval over seeds; "
            "gray whiskers (one seed): the bootstrap interval over samples, sampling only; "
            "hatched red bars: flagged for copying (⚠copies), never best; "
            "dots: individual seeds; dashed: the real-data floor.",
        )

    # -- quality vs training compute ---------------------------------------------------
    def vs_compute(self, g: Group, tag: str) -> None:
        import genbench.report.curve_plot as curve_plot

        c = g.curves
        if c is None:
            return
        real = self.s.rows(g, "real")
        floor = num(real.iloc[0].get("kid")) if not real.empty and "kid" in real else None
        fig, axes = new_figure(3, w=4.0, h=3.3)
        caption = curve_plot.draw(axes[0], c, self.colors, floor)
        fig.suptitle(f"{g.title}: quality vs training compute", fontsize=10)
        self._emit(fig, f"compute-{tag}", f"Quality vs training compute, {g.title}", caption)

    # -- quality vs sampling cost -------------------------------------------------------
    def vs_sampling(self, g: Group, tag: str) -> None:
        agg = self.s.rows(g, "mean")
        key = primary_metric(agg, lead=g.lead)
        if key is None or agg.empty:
            return
        col = COLUMN[key]
        panels = [
            (k, lab, better)
            for k, lab, better in (
                ("nfe", "network evaluations per sample (NFE)", "lower"),
                ("sample_img_s", "sampling throughput (images/s)", "higher"),
            )
            if k in agg and pd.to_numeric(agg[k], errors="coerce").notna().any()
        ]
        if not panels:
            return
        labels = [model_label(r) for _, r in agg.iterrows()]
        colors = self.colors
        fig, axes = new_figure(len(panels), w=4.8, h=3.8)
        for ax, (xk, xlabel, xbetter) in zip(axes.flat, panels, strict=True):
            xs = [num(v) for v in agg[xk]]
            ys = [num(v) for v in agg[key]]
            cis = [num(v) for v in agg.get(f"{key}_ci95", pd.Series([math.nan] * len(agg)))]
            for x, y, c, lab in zip(xs, ys, cis, labels, strict=True):
                if math.isnan(x) or math.isnan(y):
                    continue
                ax.errorbar(
                    x, y, yerr=None if math.isnan(c) else c, fmt="o", color=colors[lab], capsize=3
                )
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if xk == "nfe":
                self._sampler_curves(ax, g, agg, xs, ys)
            front = pareto_front(xs, ys, x_better=xbetter, y_better=col.better or "lower")
            if front:
                fx, fy = zip(*[(xs[i], ys[i]) for i in front], strict=True)
                ax.scatter(
                    fx, fy, s=160, facecolors="none", edgecolors="black", label="Pareto front"
                )
                if len(front) > 1:
                    ax.step(fx, fy, where="post", color="gray", ls="--", lw=1)
            if all(x > 0 for x in xs if not math.isnan(x)):
                log_x(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{col.label} ({col.better} is better)")
            ax.legend(fontsize=7)
        fig.suptitle(f"{g.title}: quality vs sampling cost", fontsize=10)
        self._emit(
            fig,
            f"sampling-{tag}",
            f"Quality vs sampling cost, {g.title}",
            "Each point is a model's mean over seeds (whiskers: 95% CI). Dashed: the Pareto "
            "front, the models no other model beats on both quality and sampling cost.",
        )

    def _sampler_curves(
        self, ax: Any, g: Group, agg: pd.DataFrame, xs: list[float], ys: list[float]
    ) -> None:
        """One line per (model, sampler, other settings) through its step counts: a
        sampler sweep (sampler x sample_steps) reads as quality-vs-NFE curves."""
        curves: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
        for i, (_, r) in enumerate(agg.iterrows()):
            run = self._first_run(g, r["model"], r["variant"])
            v = self.s.variants.get(run.run_id, {}) if run else {}
            rest = tuple(sorted((k, val) for k, val in v.items() if k != "sample_steps"))
            if not (math.isnan(xs[i]) or math.isnan(ys[i])):
                curves.setdefault((r["model"], r.get("sampler"), rest), []).append((xs[i], ys[i]))
        for (model, sampler, _), pts in sorted(curves.items(), key=lambda kv: str(kv[0])):
            if len(pts) > 1:
                px, py = zip(*sorted(pts), strict=True)
                ax.plot(px, py, "-", lw=1.2, alpha=0.8, label=f"{model} · {sampler}")

    # -- sweeps -------------------------------------------------------------------------
    def sweeps(self, g: Group, tag: str) -> None:
        agg = self.s.rows(g, "mean")
        key = primary_metric(agg, lead=g.lead)
        if key is None or agg.empty:
            return
        col = COLUMN[key]
        for model, grp in agg.groupby("model", sort=True):
            if len(grp) < 2:
                continue
            # The keys that vary among this model's aggregated rows in this group.
            first_runs = [self._first_run(g, model, v) for v in grp["variant"]]
            vars_ = [self.s.variants.get(r.run_id, {}) if r else {} for r in first_runs]
            keys = [
                k
                for k in sorted({k for v in vars_ for k in v})
                if len({v.get(k) for v in vars_}) > 1
            ]
            means = [num(v) for v in grp[key]]
            if len(keys) == 1:
                k = keys[0]
                vals = [v.get(k, "-") for v in vars_]
                order = sorted(range(len(vals)), key=lambda i: _sort_key(vals[i]))
                fig, axes = new_figure(w=5.0, h=3.6)
                ax = axes[0, 0]
                cis = [num(v) for v in grp.get(f"{key}_ci95", pd.Series([math.nan] * len(grp)))]
                ax.errorbar(
                    [vals[i] for i in order],
                    [means[i] for i in order],
                    yerr=[0 if math.isnan(cis[i]) else cis[i] for i in order],
                    fmt="o-",
                    capsize=3,
                )
                ax.set_xlabel(k)
                ax.set_ylabel(f"{col.label} ({col.better} is better)")
                ax.set_title(f"{model}: {col.label} over {k} ({g.experiment})", fontsize=10)
            elif len(keys) == 2:
                kx, ky = keys
                xs = sorted({v.get(kx, "-") for v in vars_}, key=_sort_key)
                ys = sorted({v.get(ky, "-") for v in vars_}, key=_sort_key)
                grid = np.full((len(ys), len(xs)), np.nan)
                for v, m in zip(vars_, means, strict=True):
                    grid[ys.index(v.get(ky, "-")), xs.index(v.get(kx, "-"))] = m
                fig, axes = new_figure(w=max(4.5, 1.1 * len(xs) + 2), h=max(3.5, 0.8 * len(ys) + 2))
                ax = axes[0, 0]
                cmap = "viridis_r" if col.better == "lower" else "viridis"
                im = ax.imshow(grid, cmap=cmap, aspect="auto")
                for (i, j), val in np.ndenumerate(grid):
                    if not math.isnan(val):
                        ax.text(
                            j,
                            i,
                            f"{val:.4g}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0},
                        )
                ax.set_xticks(range(len(xs)), xs, fontsize=8)
                ax.set_yticks(range(len(ys)), ys, fontsize=8)
                ax.set_xlabel(kx)
                ax.set_ylabel(ky)
                fig.colorbar(im, ax=ax, label=f"{col.label} ({col.better} is better)")
                ax.set_title(f"{model}: {col.label} over the sweep ({g.experiment})", fontsize=10)
            else:
                if keys:
                    self.notes.append(
                        f"{model} in {g.title}: {len(keys)} settings vary ({', '.join(keys)}); "
                        "no heatmap beyond two axes, see the table"
                    )
                continue
            self._emit(
                fig,
                f"sweep-{tag}-{slug(model)}",
                f"Sweep of {model}, {g.title}",
                f"Mean {col.label} over seeds per setting"
                + (" (whiskers: 95% CI)." if len(keys) == 1 else "; empty cells were not run."),
            )

    def _first_run(self, g: Group, model: str, variant: str) -> RunRecord | None:
        seeds = self.s.rows(g, "run")
        sel = seeds[(seeds["model"] == model) & (seeds["variant"] == variant)]
        return self.by_id.get(sel.iloc[0]["run_id"]) if not sel.empty else None

    # -- training curves and guidance (training_plots.py) ----------------------------
    def loss_curves(self) -> None:
        training_plots.loss_curves(self)

    def memorization(self) -> None:
        rows = memorization.memorization_rows(self.s.records)
        if (fig := memorization.memorization_figure(rows, self.dir)) is not None:
            self.figures.append(fig)

    def cfg_curves(self) -> None:
        training_plots.cfg_curves(self)


def _sort_key(v: str) -> tuple[int, float, str]:
    try:
        return 0, float(v), v
    except ValueError:
        return 1, 0.0, v


def pareto_front(
    xs: list[float], ys: list[float], *, x_better: str = "lower", y_better: str = "lower"
) -> list[int]:
    """Indices of the points no other point beats on both axes, sorted by x."""
    sx = 1 if x_better == "lower" else -1
    sy = 1 if y_better == "lower" else -1
    pts = [
        (sx * x, sy * y, i)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        if not (math.isnan(x) or math.isnan(y))
    ]
    front = []
    for x, y, i in pts:
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for x2, y2, j in pts if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: xs[i])


def _seed_dots(ax: Any, agg: pd.DataFrame, seeds: pd.DataFrame, key: str) -> None:
    """Each training seed as a dot over its model's bar: a seaborn swarm, so seeds with
    close values sit side by side instead of hiding each other (deterministic layout).
    Only where some model has several seeds."""
    pts = []
    for i, (_, r) in enumerate(agg.iterrows()):
        mine = seeds[(seeds["model"] == r["model"]) & (seeds["variant"] == r["variant"])]
        pts += [(i, v) for v in pd.to_numeric(mine.get(key), errors="coerce").dropna()]
    if len({i for i, _ in pts}) == len(pts):
        return  # one seed per model: its dot would sit on its bar's top (and a swarm costs a draw)
    import seaborn as sns  # after the figure module chose its backend

    frame = pd.DataFrame(pts, columns=["pos", "value"])
    sns.swarmplot(
        data=frame, x="pos", y="value", native_scale=True, color="black", size=3.5, ax=ax, zorder=3
    )
    ax.set_xlabel("")
    ax.set_ylabel("")


def _flag_and_sampling(
    ax: Any,
    bars: Any,
    agg: pd.DataFrame,
    key: str,
    *,
    x: np.ndarray,
    have: list[int],
    flagged: list[bool],
) -> None:
    """Hatch the flagged runs' bars; gray whiskers: one seed's sampling-only interval."""
    means = [num(v) for v in agg[key]]
    cis = [num(v) for v in agg.get(f"{key}_ci95", pd.Series([math.nan] * len(agg)))]
    for bar, i in zip(bars.patches, have, strict=True):
        if flagged[i]:  # flagged for copying: hatched, red edge, never "best"
            bar.set_hatch("xx")
            bar.set_edgecolor("red")
    sampling = [i for i in have if not cis[i] > 0 and not math.isnan(num(lo_hi(agg, key, i)[0]))]
    if sampling:  # one seed: the bootstrap interval over samples, drawn in gray
        lows = [means[i] - num(lo_hi(agg, key, i)[0]) for i in sampling]
        highs = [num(lo_hi(agg, key, i)[1]) - means[i] for i in sampling]
        ax.errorbar(
            [x[i] for i in sampling],
            [means[i] for i in sampling],
            yerr=[np.maximum(lows, 0), np.maximum(highs, 0)],
            fmt="none",
            ecolor="gray",
            elinewidth=1,
            capsize=3,
            ls=":",
        )


def lo_hi(agg: pd.DataFrame, key: str, i: int) -> tuple[Any, Any]:
    """Row i's sampling-only bootstrap interval of ``key`` (NaN where there is none)."""
    lo, hi = f"{key}_ci95_sampling_lo", f"{key}_ci95_sampling_hi"
    if lo not in agg or hi not in agg:
        return math.nan, math.nan
    return agg[lo].iloc[i], agg[hi].iloc[i]


def write_plots(summary: Summary, out_dir: Path) -> tuple[list[Figure], list[str]]:
    """Every figure the runs support; returns them and notes on what was skipped."""
    w = PlotWriter(summary, out_dir)
    figs = w.write_all()
    return figs, w.notes
