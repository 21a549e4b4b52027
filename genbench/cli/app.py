"""The genbench command line: thin commands over library functions."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from genbench.utils.errors import GenbenchError

app = typer.Typer(
    name="genbench",
    help="Train image generators on identical data, sample, score and compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
# soft_wrap: an error stays one line however narrow the terminal, so paths in it stay whole
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """User mistakes become one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenbenchError as exc:
            err_console.print(f"[red]error:[/] {_esc(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except ValidationError as exc:
            err_console.print(f"[red]error:[/] {_esc(str(exc).splitlines()[0])}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print(
                "[yellow]interrupted[/]; `genbench run --resume` continues from the last checkpoint"
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _esc(s: str) -> str:
    from rich.markup import escape

    return escape(s)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# -- run ----------------------------------------------------------------------------
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


@app.command()
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
    from genbench.config import run_config_toml
    from genbench.metrics.audit import plan_text as audit_plan
    from genbench.utils.progress import Reporter

    kw: dict[str, Any] = {
        "models": _csv(models) if models else None,
        "seeds": _int_csv(seeds, what="--seeds") if seeds else None,
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
                console.print(f"[red]cannot run:[/] {_esc(r.error)}")
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
        console.print(f"{mark}  {o.run_id}" + (f": {_esc(o.error or '')}" if o.error else ""))
    console.print(f"results in {results}/; `genbench report` summarises them")
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def _int_csv(text: str, *, what: str) -> list[int]:
    try:
        return [int(s) for s in _csv(text)]
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


# -- list ------------------------------------------------------------------------
def _metrics_table() -> Any:
    from rich.table import Table

    from genbench.metrics import units

    t = Table(title="metrics (genbench.metrics.units)")
    for c in ("name", "turned on by", "columns", "features", "what"):
        t.add_column(c, no_wrap=c in ("name", "turned on by"))
    for u in units.metric_units():
        cols = ", ".join(f"{c.key} ({c.better or 'info'})" for c in u.columns)
        on = f"metrics.{u.switch}" if u.switch else "metrics.names"
        t.add_row(u.name, on, cols or "-", u.space or "pixels", u.description)
    return t


@app.command("list")
@friendly_errors
def list_(
    check: Annotated[
        bool, typer.Option("--check", help="Import every generator and report failures.")
    ] = False,
) -> None:
    """Show registered generators (with their distributions), data sources, metric units and
    experiments."""
    from rich.table import Table

    from genbench import registry
    from genbench.config import find_experiments
    from genbench.data.sources import SOURCES

    status = registry.check_all() if check else {}
    t = Table(title="generators (entry-point group genbench.generators)")
    for c in ("name", "distribution", "object") + (("import",) if check else ()):
        t.add_column(c)
    for name, e in registry.discover().items():
        row = [name, f"{e.distribution} {e.version}", e.value]
        if check:
            row.append("ok" if status.get(name) is None else f"[red]{_esc(status[name] or '')}[/]")
        t.add_row(*row)
    console.print(t)
    t = Table(title="data sources")
    t.add_column("name")
    t.add_column("description")
    t.add_column("from")
    for s in SOURCES.values():
        t.add_row(s.name, s.description, s.availability)
    console.print(t)
    console.print(_metrics_table())
    t = Table(title="experiments (./configs, then $GENBENCH_CONFIG_PATH, then packaged)")
    t.add_column("name")
    t.add_column("from")
    t.add_column("file")
    for e in find_experiments():
        note = "".join(f"\n[dim]hides {_esc(str(s))}[/]" for s in e.shadows)
        t.add_row(e.name, e.origin, _esc(str(e.path)) + note)
    console.print(t)
    if check and any(status.values()):
        raise typer.Exit(1)


# -- config ----------------------------------------------------------------------------
config_app = typer.Typer(
    help="Inspect configs: every key of a model or section, its value and what it means.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


@config_app.command("show")
@friendly_errors
def config_show(
    name: Annotated[
        str,
        typer.Argument(
            help="A generator (`genbench list`) or a section: data, train, sample, metrics."
        ),
    ],
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            "-e",
            help="Show the values this experiment resolves to (default: the defaults).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key as in `genbench run` (needs --experiment)."),
    ] = None,
) -> None:
    """Print a config as TOML: each key with its value (the defaults, or an experiment's
    resolved values) and its description; paste keys into an experiment to change them."""
    from genbench import api

    if set_ and experiment is None:
        raise GenbenchError("--set needs --experiment (defaults are what --set changes)")
    text = api.show_config(name, experiment=experiment, overrides=list(set_ or []))
    typer.echo(text, nl=False)  # unwrapped: the output is TOML to copy from


# -- init ------------------------------------------------------------------------------
@app.command()
@friendly_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the project (created if missing).")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Project, experiment and plugin name (default: the folder's)."),
    ] = None,
) -> None:
    """Start a project: an experiment on the digits data and a generator plugin that installs and runs."""
    from genbench import api

    p = api.init_project(directory, name=name)
    for f in p.files:
        console.print(f"wrote {_esc(str(f))}", highlight=False)
    console.print(
        f"next: cd {_esc(str(p.root))} && pip install -e . && genbench run -e {p.name}",
        highlight=False,
    )


# -- sample ----------------------------------------------------------------------------
@app.command()
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
    from genbench.images import render_grid

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
@app.command()
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
            console.print(f"[bold]{_esc(g.title)}[/]: {_esc(line)}")
    for f in rep.summary.failed:
        mark = "[red]failed[/]" if f["status"] == "failed" else f"[yellow]{_esc(f['status'])}[/]"
        console.print(f"{mark} {_esc(f['run_id'])}: {_esc(str(f['error'] or ''))}")
    for note in rep.notes:
        console.print(f"[dim]note: {_esc(note)}[/]")
    shown = "report.html, " if figures else ""
    console.print(f"wrote {_esc(str(rep.out_dir))}/ ({shown}summary.csv, .json, .md, .tex)")


# -- score / doctor (genbench.metrics) ------------------------------------------------------
@app.command()
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
    from rich.table import Table

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
    t = Table(title=f"scores of {images_dir}")
    t.add_column("metric")
    t.add_column("value")
    for k, v in result["scores"].items():
        if isinstance(v, dict):
            v = f"{v['mean']:.6g} ± {v['std']:.3g}"
        elif isinstance(v, float):
            v = f"{v:.6g}"
        if v is None:
            v = "n/a: " + result["scores_unavailable"].get(k, "")
        t.add_row(k, _esc(str(v)))
    console.print(t)
    p = result["protocol"]
    console.print(
        f"protocol {p['fingerprint']}: {p['extractor']} (weights {p['weights_sha256'][:12]}), "
        f"N={p['n_generated']}, N_ref={p['n_reference']} from {p['reference']['dataset']}/"
        f"{p['reference']['split']}, {p['resolution']}px, {p['channel_handling']}",
        markup=False,
        highlight=False,
    )
    if out:
        write_json(out, result)
        console.print(f"wrote {out}")


@app.command()
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
            console.print(f"[bold]{k}[/]: {_esc(str(v))}")
    if not info["ok"]:
        raise typer.Exit(1)


@app.command()
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
    from genbench.bench import benchmark, print_report
    from genbench.utils.files import write_json

    names = _csv(models) or registry.names()
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
        results_dir=results,
    )
    print_report(result)
    if json_out:
        write_json(json_out, result)


def _terminate(signum: int, frame: Any) -> None:
    # Schedulers stop jobs with SIGTERM: unwind like Ctrl-C so the run is marked interrupted.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except BrokenPipeError:  # `genbench list | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
