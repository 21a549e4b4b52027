"""genbench from Python: the commands of the CLI as functions, for notebooks and scripts.

>>> import genbench
>>> genbench.run("smoke", models=["dcgan", "denoiser"], seeds=[0, 1], results="results")
>>> df = genbench.load_results("results")            # one row per run, with its protocol
>>> df[df.row == "run"].groupby("model").fid.mean()
>>> genbench.score(images, ref="digits")              # a uint8/float tensor or a folder
>>> genbench.build_report("results")                  # tables, plots, report.html
>>> genbench.init_project("my-bench")                 # a starter project (genbench init)

Each function is a thin wrapper over the library (:mod:`genbench.runs`,
:mod:`genbench.report`, :mod:`genbench.metrics`), so a number obtained here is
the number the CLI prints. Errors a user can fix raise :class:`genbench.utils.errors.GenbenchError`
(or a subclass) with a one-line message.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from genbench.project import Project, init_project

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from genbench.config import ExperimentConfig
    from genbench.report import Report
    from genbench.runs.grid import RunOutcome
    from genbench.runs.plan import PlannedRun
    from genbench.utils.progress import Reporter

#: ``["train.kimg=5", "dcgan.lr=2e-4"]`` (as ``--set``) or ``{"train.kimg": 5, "dcgan.lr": 2e-4}``.
Overrides: TypeAlias = "Sequence[str] | Mapping[str, Any] | None"
#: ``["ddpm.timesteps=1000,2000"]`` (as ``--sweep``) or ``{"ddpm.timesteps": [1000, 2000]}``.
Sweep: TypeAlias = "Sequence[str] | Mapping[str, Sequence[Any]] | None"

__all__ = [
    "Project",
    "build_report",
    "init_project",
    "load_experiments",
    "load_results",
    "plan",
    "run",
    "score",
    "show_config",
]


def _override_list(overrides: Overrides) -> list[str]:
    from genbench.config.describe import toml_value

    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={toml_value(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def _sweep_list(sweep: Sweep) -> list[str]:
    from genbench.config.describe import toml_value

    if sweep is None:
        return []
    if isinstance(sweep, Mapping):
        return [f"{k}={','.join(toml_value(v) for v in vals)}" for k, vals in sweep.items()]
    if isinstance(sweep, str):
        return [sweep]
    return list(sweep)


def _resolve(
    experiment: str | Path,
    *,
    models: Sequence[str] | None,
    seeds: Sequence[int] | None,
    overrides: Overrides,
    sweep: Sweep,
    pretrained: Mapping[str, str | Path] | None = None,
) -> tuple[Path, list[ExperimentConfig]]:
    from genbench import registry
    from genbench.config import find_experiment, load_experiment
    from genbench.config.describe import toml_value
    from genbench.runs.plan import sweep_points
    from genbench.utils.errors import ConfigError

    sets = _override_list(overrides)
    if models is not None:
        sets.append(f"models={toml_value(list(models))}")
    if seeds is not None:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"seeds {list(seeds)!r}: expected integers, e.g. [0, 1, 2]")
        sets.append(f"seeds={toml_value(list(seeds))}")
    for name, source in (pretrained or {}).items():
        sets.append(f"pretrained.{name}={toml_value(str(source))}")
    path = find_experiment(str(experiment))
    names = set(registry.names())
    asked = _sweep_list(sweep)
    # The experiment's own [sweep] table, less the keys --sweep gives again.
    again = {item.partition("=")[0].strip() for item in asked}
    own = load_experiment(str(path), model_names=names).sweep
    points = sweep_points(_sweep_list({k: v for k, v in own.items() if k not in again}) + asked)
    points = points or [[]]
    return path, [load_experiment(str(path), overrides=sets + p, model_names=names) for p in points]


def load_experiments(
    experiment: str | Path = "default",
    *,
    models: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Overrides = None,
    sweep: Sweep = None,
) -> list[ExperimentConfig]:
    """The validated experiment configs a run would use, one per sweep point.

    Args:
        experiment: a name looked up in ``./configs/experiments``, then
            ``$GENBENCH_CONFIG_PATH``, then the packaged experiments; or a TOML file.
        models: generator names replacing the experiment's ``models``.
        seeds: training seeds replacing the experiment's ``seeds``.
        overrides: ``--set`` style keys (``train.kimg``, ``dcgan.lr``) and values.
        sweep: keys with several values; the grid's points become separate configs.
    """
    return _resolve(experiment, models=models, seeds=seeds, overrides=overrides, sweep=sweep)[1]


def plan(
    experiment: str | Path = "default",
    *,
    models: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Overrides = None,
    sweep: Sweep = None,
    pretrained: Mapping[str, str | Path] | None = None,
    device: str | None = None,
    shard: tuple[int, int] | None = None,
) -> list[PlannedRun]:
    """The runs :func:`run` would do, with their fully resolved configs and run ids; nothing
    is trained or written (``genbench run --dry-run``). Arguments as in :func:`run`."""
    from genbench.runs.plan import plan_grid

    path, exps = _resolve(
        experiment,
        models=models,
        seeds=seeds,
        overrides=overrides,
        sweep=sweep,
        pretrained=pretrained,
    )
    return plan_grid(exps, device=device, shard=shard, experiment_file=str(path))


# params: the Python form of `genbench run`'s options, one keyword each
def run(
    experiment: str | Path = "default",
    *,
    models: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Overrides = None,
    sweep: Sweep = None,
    pretrained: Mapping[str, str | Path] | None = None,
    results: str | Path = "results",
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    shard: tuple[int, int] | None = None,
    reporter: Reporter | None = None,
) -> list[RunOutcome]:
    """Train, sample and score every (model, seed) of an experiment (``genbench run``).

    Arguments as in :func:`load_experiments`, plus: ``pretrained``, model name -> weights
    to score without training (a genbench run folder, or what the generator's
    ``from_pretrained`` reads; ``genbench run --pretrained``); ``results``, the folder that
    gets one folder per run; ``resume``, continue interrupted runs from their last checkpoint;
    ``force``, redo finished runs (else they are skipped); ``device``, overriding
    ``train.device``; ``shard=(i, n)``, run slice i of n of the grid; ``reporter``, where
    progress goes (``genbench.utils.progress.Reporter(rich.console.Console())`` shows it; the
    default is quiet).

    Returns one :class:`genbench.runs.grid.RunOutcome` per run (status ``done``, ``skipped``
    or ``failed`` with its error); a failing run never stops the others. Read the scores
    with :func:`load_results`.
    """
    from genbench.runs.grid import RunOptions, run_grid
    from genbench.utils.progress import Reporter

    path, exps = _resolve(
        experiment,
        models=models,
        seeds=seeds,
        overrides=overrides,
        sweep=sweep,
        pretrained=pretrained,
    )
    options = RunOptions(
        results_dir=Path(results), resume=resume, force=force, reporter=reporter or Reporter()
    )
    return run_grid(exps, options=options, device=device, experiment_file=str(path), shard=shard)


def load_results(*results: str | Path) -> pd.DataFrame:
    """The runs in one or more results folders as a DataFrame, one row per run folder.

    Columns: ``row`` (``run``, or ``real`` for the real-data floor), ``experiment``,
    ``model``, ``seed``, ``status``, ``run_id``, ``error``, ``protocol`` (the protocol
    fingerprint: only rows with equal fingerprints are comparable), the scores (``fid``,
    ``kid``, ``kid_std``, ``precision``, ``recall``, ``isc``, ...), costs (``params_m``,
    ``kimg``, ``train_s``, ``train_flops``, ``nfe``, ``sample_img_s``, ...) and ``run_dir``.
    Several folders (array-job shards) merge; a run found twice keeps its finished copy.
    """
    import pandas as pd

    from genbench.report.collect import load_runs, run_row

    dirs = [Path(r) for r in results] or [Path("results")]
    return pd.DataFrame([{**run_row(r), "run_dir": str(r.path)} for r in load_runs(dirs)])


def score(
    images: torch.Tensor | str | Path,
    *,
    ref: str,
    labels: torch.Tensor | Sequence[int] | None = None,
    n_ref: int | None = None,
    inception_weights: str | Path | None = None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Score images against a held-out reference under genbench's protocol (``genbench score``).

    Args:
        images: a folder of images, or a tensor N x C x H x W (C = 1 or 3), uint8 or float
            in [0, 1] (what ``Generator.sample`` returns). A tensor is saved as uint8 PNGs
            first, exactly as genbench saves sample sets, so its scores equal those of the
            saved folder.
        ref: an experiment (its data, metric settings and N_ref) or a data source name.
        labels: intended class labels of a tensor's images (per-class scores and class
            consistency); a folder's come from its ``manifest.json``.
        n_ref: reference images (default: the experiment's, or as many as the images).
        inception_weights: a weights file (see ``genbench doctor``).
        out_dir: where the copy audit (copies.json, copies.png) and bootstrap replicates go (default: not written).

    Returns ``scores`` (fid, kid {mean, std}, precision, recall, isc, ...; a metric that
    cannot be computed is None with its reason in ``scores_unavailable``), ``protocol``
    (with its ``fingerprint``), ``per_class``, ``class_consistency``, ``copies``, ``bootstrap``
    and ``warnings``.
    """
    from genbench.metrics import score_folder

    kw: dict[str, Any] = {
        "ref": ref,
        "inception_weights": inception_weights,
        "device": device,
        "n_ref": n_ref,
        "out_dir": Path(out_dir) if out_dir is not None else None,
        "reporter": reporter,
    }
    if isinstance(images, (str, Path)):
        if labels is not None:
            raise ValueError("labels go with a tensor; a folder's labels are in its manifest.json")
        return score_folder(Path(images), **kw)
    with tempfile.TemporaryDirectory(prefix="genbench-score-") as tmp:
        folder = Path(tmp) / "images"
        _write_images(folder, images, labels)
        return score_folder(folder, **kw)


def _write_images(
    folder: Path, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None
) -> None:
    import torch

    from genbench.data import to_uint8
    from genbench.storage.folder import write_sample_set
    from genbench.utils.errors import GenbenchError

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise GenbenchError(f"images: expected a tensor N x C x H x W with C = 1 or 3, got {shape}")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise GenbenchError(f"images: expected uint8 or float in [0, 1], got {images.dtype}")
        images = to_uint8(images)
    manifest: dict[str, Any] = {}
    if labels is not None:
        lab = [int(x) for x in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
        if len(lab) != len(images):
            raise GenbenchError(f"labels: {len(lab)} for {len(images)} images")
        manifest = {"condition": "classes", "labels": lab}
    write_sample_set(folder, images.cpu(), manifest)


def build_report(
    *results: str | Path,
    out: str | Path | None = None,
    figures: bool = True,
    data: bool = True,
) -> Report:
    """Summarise results folders into tables, plots, image grids and report.html
    (``genbench report``); several folders merge. ``out`` defaults to the first folder's
    ``report/``; ``figures=False`` writes the tables only; ``data=False`` never loads the
    data set. The returned :class:`genbench.report.Report` holds the summary table
    (``.table``, a DataFrame with mean ± 95% CI rows per model) and the files written."""
    from genbench.report import write_report

    dirs = [Path(r) for r in results] or [Path("results")]
    return write_report(
        dirs,
        Path(out) if out is not None else None,
        plots=figures,
        grids=figures,
        html=figures,
        data=data,
    )


def show_config(
    name: str,
    *,
    experiment: str | Path | None = None,
    overrides: Overrides = None,
) -> str:
    """A generator's config (or a section: data, train, sample, metrics) as commented TOML:
    every key with its value and description (``genbench config show``).

    Without ``experiment`` the values are the defaults (the Config classes are their one
    source); with it, the values that experiment (and ``overrides``) resolve to, each
    changed key saying its default.
    """
    from genbench import registry
    from genbench.config import resolve_model_config
    from genbench.config.describe import config_fields, render_config_fields
    from genbench.config.schema import SECTIONS

    exp = None
    path = None
    if experiment is not None:
        path, (exp,) = _resolve(
            experiment, models=None, seeds=None, overrides=overrides, sweep=None
        )
    where = f"as experiment {exp.name!r} resolves it" if exp is not None else "defaults"
    if name in SECTIONS:
        cls = type(getattr(exp, name)) if exp is not None else _section_class(name)
        values = getattr(exp, name) if exp is not None else None
        header = [f"[{name}] {cls.__name__}: {where}", _first_line(cls.__doc__)]
        return render_config_fields(config_fields(cls, values), header=[h for h in header if h])
    entry = registry.entry(name)
    config_cls = registry.load(name).Config
    values = (
        resolve_model_config(name, config_cls, exp, experiment_file=str(path))
        if exp is not None
        else None
    )
    header = [
        f"{name}: {config_cls.__name__} ({entry.value}, {entry.distribution} {entry.version}), {where}",
        _first_line(config_cls.__doc__),
        f"Change keys in an experiment's [model.{name}] table or with --set {name}.KEY=VALUE.",
    ]
    return render_config_fields(config_fields(config_cls, values), header=[h for h in header if h])


def _section_class(name: str) -> type[Any]:
    from genbench.config import ExperimentConfig

    return ExperimentConfig.model_fields[name].annotation  # type: ignore[return-value]


def _first_line(doc: str | None) -> str:
    from genbench.contract import GeneratorConfig

    if not doc or doc == GeneratorConfig.__doc__:
        return ""
    return doc.strip().splitlines()[0]
