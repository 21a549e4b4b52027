"""write_report: the report folder (summary tables, plots, grids, report.html) and the
terminal table."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import genbench.report.curves as curves
import genbench.report.dynamics as dynamics
from genbench.config import DataConfig
from genbench.data import DataBundle, load_data
from genbench.report.audit import audit_markdown, audit_rows
from genbench.report.collect import RunRecord, load_runs
from genbench.report.memorization import (
    for_json,
    memorization_html,
    memorization_markdown,
    memorization_rows,
)
from genbench.report.render import (
    DisplayTable,
    display_table,
    headline,
    rich_tables,
    separation_markdown,
    to_latex,
    to_markdown,
)
from genbench.report.stats import CI_NOTE, Summary, summarize
from genbench.report.twins import twin_rows
from genbench.utils.errors import GenbenchError
from genbench.utils.files import atomic_write, write_text


@dataclass
class Report:
    summary: Summary
    out_dir: Path
    files: list[str] = field(default_factory=list)  # relative to out_dir
    notes: list[str] = field(default_factory=list)
    # the memorization view: one row per run trained on a subset, one per two-model pair
    memorization: list[dict[str, Any]] = field(default_factory=list)
    twins: list[dict[str, Any]] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        return self.summary.table

    def tables(self, *, per_seed: bool = False) -> list[DisplayTable]:
        return [display_table(self.summary, g, per_seed=per_seed) for g in self.summary.groups]


def _markdown(report: Report, tables: list[DisplayTable], per_seed: list[DisplayTable]) -> str:
    summary, notes = report.summary, report.notes
    memorization, twins = report.memorization, report.twins
    lines = ["# genbench report", "", CI_NOTE, ""]
    for g, t in zip(summary.groups, tables, strict=True):
        if line := headline(summary, g):
            lines += [f"**{t.title}**: {line}", ""]
    lines += ["## Models (mean over seeds)", "", to_markdown(tables)]
    with_curves = [(g, t) for g, t in zip(summary.groups, tables, strict=True) if g.curves]
    if with_curves:
        lines += ["## Who leads at each budget", ""]
        for g, t in with_curves:
            lines += [f"### {t.title}", "", curves.markdown(g.curves)]
    matrices = [
        (t, m) for g, t in zip(summary.groups, tables, strict=True) if (m := separation_markdown(g))
    ]
    if matrices:
        lines += ["## Which differences the data supports", ""]
        for t, m in matrices:
            lines += [f"### {t.title}", "", m]
    if audit := audit_markdown(audit_rows(summary.records)):
        lines += ["## Copy audit", "", audit]
    if memo := memorization_markdown(memorization, twins):
        lines += ["## Memorization", "", memo]
    if notes:
        lines += ["## Training notes", "", *(f"- {n}" for n in notes), ""]
    lines += ["## Per seed", "", to_markdown(per_seed)]
    if summary.failed:
        lines += ["## Failed and unfinished runs", ""]
        lines += [
            f"- `{f['run_id']}` ({f['status']}): {(f['error'] or '').replace(chr(10), ' ')}"
            for f in summary.failed
        ]
        lines.append("")
    return "\n".join(lines)


def _write_tables(report: Report) -> None:
    """summary.csv, .json, .md and .tex."""
    summary, out_dir = report.summary, report.out_dir
    table = summary.table
    atomic_write(out_dir / "summary.csv", lambda p: table.to_csv(p, index=False))
    data = {**summary.for_json(), "copy_audit": audit_rows(summary.records)}
    if report.memorization or report.twins:
        data["memorization"] = {"runs": for_json(report.memorization), "two_model": report.twins}
    write_text(
        out_dir / "summary.json",
        json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n",
    )
    tables = report.tables()
    per_seed = report.tables(per_seed=True)
    write_text(out_dir / "summary.md", _markdown(report, tables, per_seed))
    write_text(out_dir / "summary.tex", to_latex(tables))
    report.files += ["summary.csv", "summary.json", "summary.md", "summary.tex"]


def write_report(
    results_dirs: Path | Sequence[Path],
    out_dir: Path | None = None,
    *,
    plots: bool = True,
    grids: bool = True,
    html: bool = True,
    data: bool = True,
) -> Report:
    """Summarise the run folders under ``results_dirs`` (one folder or several to merge)
    into ``out_dir`` (default: the first folder's ``report/``).

    ``data=False`` never loads the data set (no real-image grid). Failed runs are
    listed, never fatal; raises GenbenchError only when there is no run at all.
    """
    dirs = [results_dirs] if isinstance(results_dirs, Path) else [Path(d) for d in results_dirs]
    records = load_runs(dirs)
    if not records:
        shown = ", ".join(str(d) for d in dirs)
        raise GenbenchError(f"no runs found in {shown} (run `genbench run` first)")
    out_dir = out_dir or dirs[0] / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    report = Report(summary, out_dir)
    report.notes += dynamics.notes(records)
    report.memorization = memorization_rows(records)
    if report.memorization and data:  # the two-model check reads the training images
        report.twins, notes = twin_rows(records, train_images=_training_images())
        report.notes += notes

    _write_tables(report)
    figures, grid_list = [], []
    if plots:
        from genbench.report.plots import write_plots

        shutil.rmtree(out_dir / "plots", ignore_errors=True)  # no stale figures from older runs
        figures, notes = write_plots(summary, out_dir)
        report.notes += notes
        report.files += [f.png for f in figures] + [f.svg for f in figures]
    if grids:
        from genbench.report.grids import write_grids

        shutil.rmtree(out_dir / "grids", ignore_errors=True)
        grid_list, notes = write_grids(summary, out_dir, data=data)
        report.notes += notes
        report.files += [g.path for g in grid_list]
    if html:
        from genbench.report.html import render

        write_text(
            out_dir / "report.html",
            render(
                summary,
                out_dir,
                figures=figures,
                grids=grid_list,
                notes=report.notes,
                sections=[memorization_html(report.memorization, report.twins)],
            ),
        )
        report.files.append("report.html")
    return report


def _training_images() -> Callable[[RunRecord], torch.Tensor]:
    """A run's uint8 training images, from its recorded data config (each data set loaded once)."""
    loaded: dict[str, DataBundle] = {}

    def images(rec: RunRecord) -> torch.Tensor:
        cfg = DataConfig.model_validate(rec.config.get("data") or {})
        key = cfg.model_dump_json()
        if key not in loaded:
            loaded[key] = load_data(cfg)
        return loaded[key].train.images

    return images


def rich_table(df_or_report: Any) -> Any:
    """A rich renderable of the aggregated rows (mean ± CI, real row on top), per group."""
    from rich.console import Group as RichGroup

    summary = df_or_report.summary if isinstance(df_or_report, Report) else None
    if summary is None:
        raise TypeError("rich_table takes the Report that write_report returns")
    tables = [display_table(summary, g) for g in summary.groups]
    return RichGroup(*rich_tables(tables))
