"""``genbench bench``'s figures (:func:`genbench.bench.benchmark`) as terminal tables."""

from __future__ import annotations

from typing import Any


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
