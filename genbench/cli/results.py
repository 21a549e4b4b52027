"""Looking at results: ``genbench sample`` (grids from a trained run) and ``genbench
report`` (tables, plots, grids and report.html from run folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genbench.cli.app import console, esc, friendly_errors


# -- sample ----------------------------------------------------------------------------
@friendly_errors
def sample(
    run_dir: Annotated[Path, typer.Argument(help="A run folder under results/.")],
    n: Annotated[
        int | None,
        typer.Option(
            "--n",
            min=1,
            help="Images: 64 in a plain grid; per class, mix or strip row 8 (the default).",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="Class indices or names, comma-separated; images cycle through them."
        ),
    ] = None,
    per_class: Annotated[
        bool,
        typer.Option("--per-class", help="One row of --n images per class (conditional runs)."),
    ] = False,
    mix: Annotated[
        list[str] | None,
        typer.Option(
            "--mix", help="Class mixture, e.g. 0,1 or 0,1,2 or 0:0.7,1:0.3; repeat for more rows."
        ),
    ] = None,
    interpolate: Annotated[
        str | None,
        typer.Option("--interpolate", help="Attribute name: a strip from 0 to 1 with fixed noise."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed.")] = 0,
    nrow: Annotated[int | None, typer.Option("--nrow", help="Images per grid row.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output PNG (default RUN_DIR/grids/<what>.png).")
    ] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Render a grid of samples from a trained run (per class, class mixes, attribute strips)."""
    from genbench.runs.trained import render_grid

    rows = per_class or bool(mix) or interpolate is not None
    path = render_grid(
        run_dir,
        n=n if n is not None else (8 if rows else 64),
        labels=labels,
        per_class=per_class,
        mix=mix or [],
        interpolate=interpolate,
        seed=seed,
        nrow=nrow,
        out=out,
        device=device,
    )
    console.print(f"wrote {path}")


# -- report ----------------------------------------------------------------------------
@friendly_errors
def report(
    results_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Results folder(s) with run folders (default: results); several merge, e.g. shards."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: the first RESULTS_DIR/report)."),
    ] = None,
    data: Annotated[
        bool,
        typer.Option("--data/--no-data", help="Load the data set for a grid of real images."),
    ] = True,
    figures: Annotated[
        bool,
        typer.Option("--figures/--no-figures", help="Write plots, image grids and report.html."),
    ] = True,
) -> None:
    """Summarise the runs into RESULTS_DIR/report/: tables (CSV, JSON, Markdown, LaTeX),
    plots, image grids and a self-contained report.html."""
    from genbench import api
    from genbench.report import rich_table
    from genbench.report.render import headline

    rep = api.build_report(
        *(results_dirs or [Path("results")]), out=out, figures=figures, data=data
    )
    console.print(rich_table(rep))
    for g in rep.summary.groups:
        if line := headline(rep.summary, g):
            console.print(f"[bold]{esc(g.title)}[/]: {esc(line)}")
    for f in rep.summary.failed:
        mark = "[red]failed[/]" if f["status"] == "failed" else f"[yellow]{esc(f['status'])}[/]"
        console.print(f"{mark} {esc(f['run_id'])}: {esc(str(f['error'] or ''))}")
    for note in rep.notes:
        console.print(f"[dim]note: {esc(note)}[/]")
    shown = "report.html, " if figures else ""
    console.print(f"wrote {esc(str(rep.out_dir))}/ ({shown}summary.csv, .json, .md, .tex)")
