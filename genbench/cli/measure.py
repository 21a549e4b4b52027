"""Measuring: ``genbench score`` (a folder of images), ``genbench doctor`` (which Inception
extractor scoring uses) and ``genbench bench`` (speed on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genbench.cli.app import console, csv_items, esc, friendly_errors
from genbench.utils.errors import GenbenchError


@friendly_errors
def score(
    images_dir: Annotated[
        Path, typer.Argument(help="A folder of images (PNG/JPEG), e.g. a run's samples/ folder.")
    ],
    ref: Annotated[
        str,
        typer.Option(
            "--ref",
            help="Experiment (name or TOML) or data source whose held-out split is the reference.",
        ),
    ],
    inception_weights: Annotated[
        Path | None,
        typer.Option("--inception-weights", help="Inception weights file (see `genbench doctor`)."),
    ] = None,
    n_ref: Annotated[
        int | None,
        typer.Option("--n-ref", min=2, help="Reference images (default: the experiment's N)."),
    ] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the full result as JSON (the copy audit's copies.png beside it)."
        ),
    ] = None,
) -> None:
    """Score a folder of images under genbench's protocol (FID, KID, precision/recall, IS)."""
    from genbench import api
    from genbench.utils.files import write_json
    from genbench.utils.progress import Reporter

    result = api.score(
        images_dir,
        ref=ref,
        inception_weights=inception_weights,
        device=device,
        n_ref=n_ref,
        out_dir=out.parent if out else None,
        reporter=Reporter(console),
    )
    _print_scores(result, title=f"scores of {images_dir}")
    if out:
        write_json(out, result)
        console.print(f"wrote {out}")


def _print_scores(result: dict[str, Any], *, title: str) -> None:
    """The scores as a table, then the protocol they were measured under, on one line."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value")
    for k, v in result["scores"].items():
        if isinstance(v, dict):
            v = f"{v['mean']:.6g} ± {v['std']:.3g}"
        elif isinstance(v, float):
            v = f"{v:.6g}"
        if v is None:
            v = "n/a: " + result["scores_unavailable"].get(k, "")
        t.add_row(k, esc(str(v)))
    console.print(t)
    p = result["protocol"]
    console.print(
        f"protocol {p['fingerprint']}: {p['extractor']} (weights {p['weights_sha256'][:12]}), "
        f"N={p['n_generated']}, N_ref={p['n_reference']} from {p['reference']['dataset']}/"
        f"{p['reference']['split']}, {p['resolution']}px, {p['channel_handling']}",
        markup=False,
        highlight=False,
    )


@friendly_errors
def doctor(
    inception_weights: Annotated[
        Path | None, typer.Option("--inception-weights", help="Inception weights file to check.")
    ] = None,
    inception: Annotated[
        str, typer.Option("--inception", help="auto, official or fidhelper (metrics.inception).")
    ] = "auto",
) -> None:
    """Say which Inception feature extractor scoring uses here, and why."""
    from genbench.metrics import doctor as metrics_doctor

    info = metrics_doctor(
        mode=inception, inception_weights=str(inception_weights) if inception_weights else None
    )
    for k, v in info.items():
        if k != "ok":
            console.print(f"[bold]{k}[/]: {esc(str(v))}")
    if not info["ok"]:
        raise typer.Exit(1)


@friendly_errors
def bench(
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated names (default: all registered)."),
    ] = None,
    resolution: Annotated[int, typer.Option("--resolution")] = 32,
    channels: Annotated[int, typer.Option("--channels", min=1, max=3)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    train_steps: Annotated[
        int, typer.Option("--train-steps", min=1, help="Timed training steps.")
    ] = 10,
    sample_n: Annotated[
        int, typer.Option("--sample-n", min=1, help="Images per timed sampling run.")
    ] = 16,
    score_n: Annotated[
        int,
        typer.Option(
            "--score-n",
            min=0,
            help="Images per side for the scoring benchmark against torch-fidelity (0 = skip).",
        ),
    ] = 32,
    inception_n: Annotated[
        int,
        typer.Option(
            "--inception-n",
            min=0,
            help="Images for Inception's fp32 and bf16 images/s (0 = skip).",
        ),
    ] = 24,
    results: Annotated[
        Path | None,
        typer.Option("--results", help="Also show the wall time by phase of the runs in here."),
    ] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this file.")
    ] = None,
) -> None:
    """Measure training, sampling and scoring speed on this machine, next to a matmul's GFLOP/s."""
    from genbench import registry
    from genbench.bench import benchmark, print_bench
    from genbench.utils.files import write_json

    names = csv_items(models) or registry.names()
    for n in names:
        registry.entry(n)
    if results is not None and not results.is_dir():
        raise GenbenchError(f"results folder {results} does not exist")
    result = benchmark(
        names,
        device=device,
        resolution=resolution,
        channels=channels,
        batch_size=batch_size,
        train_steps=train_steps,
        sample_n=sample_n,
        score_n=score_n,
        inception_n=inception_n,
        results_dir=results,
    )
    print_bench(result)
    if json_out:
        write_json(json_out, result)
