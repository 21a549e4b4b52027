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
    from genbench.bench import benchmark
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


# -- the bench report ---------------------------------------------------------------------
def print_bench(result: dict[str, Any]) -> None:
    """``genbench bench``'s figures (:func:`genbench.bench.benchmark`) as terminal tables."""
    from rich.console import Console

    env, mm = result["environment"], result["matmul"]
    out = Console()
    native = "native bf16" if env.get("cpu_native_bf16") else "no native bf16"
    out.print(
        f"[bold]genbench bench[/] on {env['device_name']} ({env['device']}, "
        f"{env['torch_threads']} torch threads, torch {env['torch']}, {native}; runs use "
        f"{env.get('default_precision', 'fp32')}); "
        f"{mm['n']}x{mm['n']} {mm['dtype']} matmul: [bold]{mm['gflops_per_s']:.1f}[/] GFLOP/s"
        + (
            f", float32: [bold]{m32['gflops_per_s']:.1f}[/] GFLOP/s"
            if (m32 := result.get("matmul_fp32")) and mm["dtype"] != "float32"
            else ""
        )
    )
    for table in _speed_tables(result["models"]):
        out.print(table)
    if inc := result.get("inception"):
        out.print(_inception_line(inc))
    if sc := result.get("scoring"):
        out.print(_scoring_line(sc))
    if phases := result.get("phases"):
        out.print(_phases_table(phases))


def _speedup(by: dict[str, float]) -> str:
    return f"{by['bf16'] / by['fp32']:.2f}x" if by.get("bf16") and by.get("fp32") else "n/a"


def _cell(x: float | None, fmt: str = ".1f") -> str:
    return format(x, fmt) if x is not None else "n/a"


def _speed_tables(models: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Training and sampling images/s per model, fp32 and bf16 side by side."""
    from rich.table import Table

    train = Table(title="Training (images/s)")
    cols = ("model", "params", "batch", "fp32", "bf16", "bf16/fp32", "GFLOP/step", "GFLOP/s")
    for col in (*cols, "of matmul"):
        train.add_column(col, justify="left" if col == "model" else "right")
    samp = Table(title="Sampling (images/s)")
    for col in ("model", "sampler", "NFE/img", "images", "fp32", "bf16", "bf16/fp32"):
        samp.add_column(col, justify="left" if col in ("model", "sampler") else "right")
    for r in models:
        ips = {p: v["images_per_s"] for p, v in r["train"].items()}
        frac = r.get("matmul_fraction")
        train.add_row(
            r["model"],
            f"{r['parameters'] / 1e6:.2f}M",
            str(r["batch_size"]),
            _cell(ips.get("fp32")),
            _cell(ips.get("bf16")),
            _speedup(ips),
            _cell(r["train_step_gflop"], ".2f"),
            _cell(r["train_gflops_per_s"]),
            f"{frac:.0%}" if frac is not None else "n/a",
        )
        for sm in r["sampling"]:
            by = sm["images_per_s"]
            samp.add_row(
                r["model"],
                sm["variant"],
                str(sm["nfe"]),
                str(sm["n"]),
                _cell(by.get("fp32"), ".2f"),
                _cell(by.get("bf16"), ".2f"),
                _speedup(by),
            )
    return train, samp


def _inception_line(inc: dict[str, Any]) -> str:
    """Inception's images/s, fp32 and bf16 side by side (``metrics.precision``)."""
    ips = inc["images_per_s"]
    frac = inc.get("fp32_peak_fraction")
    peak = f", {frac:.0%} of the fp32 matmul's GFLOP/s" if frac is not None else ""
    bf16 = (
        f"; bf16 {ips['bf16']:.1f} img/s ({_speedup(ips).replace('x', '×')} fp32)"
        if "bf16" in ips
        else "; bf16: not run on this device"
    )
    return (
        f"Inception ({inc['extractor']}, {inc['images']} images, batches of "
        f"{inc['batch_size']}, {inc['gflop_per_image']:.2f} GFLOP/image): fp32 "
        f"{ips['fp32']:.1f} img/s ({inc['gflops_per_s']['fp32']:.0f} GFLOP/s{peak}){bf16}"
    )


def _scoring_line(sc: dict[str, Any]) -> str:
    lay = sc["by_layout"]
    return (
        f"Scoring {sc['images']} images ({sc['extractor']}, fp32): genbench NCHW "
        f"{lay['nchw']['images_per_s']:.1f} img/s, channels_last "
        f"{lay['channels_last']['images_per_s']:.1f} img/s "
        f"({lay['channels_last']['images_per_s'] / lay['nchw']['images_per_s']:.2f}x; "
        f"FID {lay['nchw']['fid']:.4f} vs {lay['channels_last']['fid']:.4f}); "
        f"with {sc['layout']}: {sc['genbench_images_per_s']:.1f} img/s, torch-fidelity directly "
        f"{sc['torch_fidelity_images_per_s']:.1f} img/s, overhead ratio "
        f"{sc['overhead_ratio']:.2f}; FID {sc['fid_genbench']:.4f} vs "
        f"{sc['fid_torch_fidelity']:.4f}"
    )


def _phases_table(phases: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="Wall time by phase (s)")
    for col in ("run", "train", "sample", "score", "total"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for p in phases:
        table.add_row(
            p["run_id"],
            *(f"{p[k]:.0f}" if p[k] is not None else "" for k in ("train", "sample", "score")),
            f"{p['total']:.0f}",
        )
    table.add_row("all runs", "", "", "", f"{sum(p['total'] for p in phases):.0f}")
    return table
