"""``genbench run``: train, sample and score an experiment's runs (or print their plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genbench.cli.app import console, csv_items, esc, friendly_errors
from genbench.utils.errors import GenbenchError

# The options of `genbench run`, named so that its signature reads at a glance.
_RunModels = Annotated[
    str | None,
    typer.Option(
        "--models", "-m", help="Comma-separated generator names (default: the experiment's)."
    ),
]
_RunExperiment = Annotated[
    str,
    typer.Option(
        "--experiment",
        "-e",
        help="Experiment name (./configs/experiments, $GENBENCH_CONFIG_PATH, packaged) or a TOML file.",
    ),
]
_RunSet = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key: train.kimg=5, data.resolution=16, dcgan.lr=2e-4."
    ),
]
_RunSeeds = Annotated[
    str | None, typer.Option("--seeds", help="Comma-separated training seeds, e.g. 0,1,2.")
]
_RunResume = Annotated[
    bool, typer.Option("--resume", help="Continue interrupted runs from their last checkpoint.")
]
_RunForce = Annotated[bool, typer.Option("--force", help="Re-run runs that already finished.")]
_RunDevice = Annotated[
    str | None,
    typer.Option(
        "--device", help="auto, cpu, cuda or cuda:N (default: the experiment's train.device)."
    ),
]
_RunDryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the resolved run configs and exit.")
]
_RunResults = Annotated[Path, typer.Option("--results", help="Results folder.")]
_RunSweep = Annotated[
    list[str] | None,
    typer.Option(
        "--sweep",
        help="Run a grid: KEY=V1,V2,... (repeat for more axes), e.g. ddpm.timesteps=1000,2000.",
    ),
]
_RunShard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Run only slice I of N of the (model x seed) grid, e.g. 0/4 (array jobs).",
    ),
]
_RunPretrained = Annotated[
    list[str] | None,
    typer.Option(
        "--pretrained",
        help="MODEL=SOURCE: score these weights without training (a genbench run folder, "
        "a diffusers folder or hub id for diffusers-unet).",
    ),
]


@friendly_errors
def run(
    models: _RunModels = None,
    experiment: _RunExperiment = "default",
    set_: _RunSet = None,
    seeds: _RunSeeds = None,
    resume: _RunResume = False,
    force: _RunForce = False,
    device: _RunDevice = None,
    dry_run: _RunDryRun = False,
    results: _RunResults = Path("results"),
    sweep: _RunSweep = None,
    shard: _RunShard = None,
    pretrained: _RunPretrained = None,
) -> None:
    """Train, sample and score each model once per seed on the experiment's data.

    With --pretrained, that model is loaded instead of trained and scored the same way.
    Under `torchrun --nproc_per_node=N -m genbench run ...` training is data-parallel.
    """
    from genbench import api
    from genbench.config.files import run_config_toml
    from genbench.metrics.audit.unit import plan_text as audit_plan
    from genbench.utils.progress import Reporter

    kw: dict[str, Any] = {
        "models": csv_items(models) if models else None,
        "seeds": _intcsv_items(seeds, what="--seeds") if seeds else None,
        "overrides": list(set_ or []),
        "sweep": list(sweep or []),
        "pretrained": _pairs(pretrained or [], what="--pretrained"),
        "device": device,
        "shard": parse_shard(shard) if shard else None,
    }
    if dry_run:
        for r in api.plan(experiment, **kw):
            console.rule(f"{r.run_id}")
            if r.error:
                console.print(f"[red]cannot run:[/] {esc(r.error)}")
            console.print(run_config_toml(r.config), markup=False, highlight=False)
            console.print(
                f"# {audit_plan(r.config)}", markup=False, highlight=False, soft_wrap=True
            )
        return
    outcomes = api.run(
        experiment, **kw, results=results, resume=resume, force=force, reporter=Reporter(console)
    )
    if not outcomes:
        console.print("no runs selected (an empty shard?)")
    for o in outcomes:
        mark = {"done": "[green]done[/]", "skipped": "[dim]skipped[/]", "failed": "[red]failed[/]"}[
            o.status
        ]
        console.print(f"{mark}  {o.run_id}" + (f": {esc(o.error or '')}" if o.error else ""))
    console.print(f"results in {results}/; `genbench report` summarises them")
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def _intcsv_items(text: str, *, what: str) -> list[int]:
    try:
        return [int(s) for s in csv_items(text)]
    except ValueError:
        raise GenbenchError(f"{what} {text!r}: expected comma-separated integers") from None


def _pairs(items: list[str], *, what: str) -> dict[str, str]:
    """MODEL=SOURCE items -> {model: source}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise GenbenchError(f"{what} {item!r}: expected MODEL=SOURCE")
        out[name.strip()] = source.strip()
    return out


def parse_shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(i), int(n)
    except ValueError:
        raise GenbenchError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
