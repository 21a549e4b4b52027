"""Runs an experiment: plans its (model, seed) runs, skips the done and the locked
ones, and does each of the others through :mod:`genbench.pipeline`. One failing
run never stops the others."""

from __future__ import annotations

import itertools
import sys
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genbench import registry
from genbench.config import (
    ExperimentConfig,
    RunConfig,
    build_run_config,
    check_model_tables,
    resolve_model_config,
)
from genbench.contract import Generator, GeneratorConfig
from genbench.data import DataBundle, load_data
from genbench.pipeline import execute_run
from genbench.preflight import preflight
from genbench.pretrained import check_source
from genbench.rundir import RunFolder, set_status, try_lock_run
from genbench.utils.device import configure_backend, resolve_device
from genbench.utils.distributed import (
    SINGLE,
    DistInfo,
    broadcast_object,
    from_env,
    shutdown,
)
from genbench.utils.errors import ConfigError, GenbenchError, MissingExtra, first_line, one_line
from genbench.utils.progress import Reporter

if TYPE_CHECKING:
    from genbench.metrics.inception import ExtractorChoice


@dataclass
class PlannedRun:
    config: RunConfig
    generator_cls: type[Generator] | None
    error: str | None = None  # a plugin that failed to load fails only its own runs
    point: int = 0  # which of a sweep's experiments (grid points) the run belongs to

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclass
class RunOutcome:
    run_id: str
    model: str
    seed: int
    status: str  # done | skipped | failed
    error: str | None = None
    run_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOptions:
    """How planned runs execute (``genbench run``'s flags): the results folder, --resume,
    --force, where progress goes (None: quiet), and the Inception extractor scoring uses
    (None: the one ``metrics`` chooses; tests pass a stand-in)."""

    results_dir: Path
    resume: bool = False
    force: bool = False
    reporter: Reporter | None = None
    extractor: ExtractorChoice | None = None


def plan(experiment: ExperimentConfig, *, experiment_file: str = "experiment") -> list[PlannedRun]:
    """Resolve every (model, seed) run config; unknown models and bad keys are errors here."""
    check_model_tables(experiment, registered=set(registry.names()))
    planned = []
    for name in experiment.models:
        registry.entry(name)  # unknown names fail loudly, before anything runs
        try:
            cls = registry.load(name)
        except MissingExtra:
            raise  # a setup error for the whole command, not one failing run
        except GenbenchError as exc:
            cfg = build_run_config(experiment, name, 0, _EmptyConfig())
            planned += [
                PlannedRun(cfg.model_copy(update={"seed": s}), None, str(exc))
                for s in experiment.seeds
            ]
            continue
        mcfg = resolve_model_config(name, cls.Config, experiment, experiment_file=experiment_file)
        for seed in experiment.seeds:
            planned.append(PlannedRun(build_run_config(experiment, name, seed, mcfg), cls))
    return planned


class _EmptyConfig(GeneratorConfig):
    pass


def plan_grid(
    experiments: list[ExperimentConfig],
    *,
    device: str | None = None,
    shard: tuple[int, int] | None = None,
    experiment_file: str = "experiment",
) -> list[PlannedRun]:
    """The one planner (``genbench run``, its ``--dry-run``, :func:`genbench.api.plan`):
    every (grid point x model x seed) run of a sweep's experiments, with ``--device``
    applied, then the shard's slice of that whole grid. ``PlannedRun.point`` is the index
    of the run's experiment."""
    planned = [
        replace(r, point=i)
        for i, exp in enumerate(experiments)
        for r in plan(with_device(exp, device), experiment_file=experiment_file)
    ]
    return select_shard(planned, *shard) if shard is not None else planned


def run_experiment(
    experiment: ExperimentConfig,
    *,
    results_dir: Path,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    reporter: Reporter | None = None,
    experiment_file: str = "experiment",
    only: set[str] | None = None,
    real_row: bool = True,
    extractor: ExtractorChoice | None = None,
) -> list[RunOutcome]:
    """Plan and run one experiment's (model x seed) runs (``only``: just these run ids)."""
    experiment = with_device(experiment, device)
    runs = plan(experiment, experiment_file=experiment_file)
    if only is not None:
        runs = [r for r in runs if r.run_id in only]
    options = RunOptions(
        results_dir=results_dir,
        resume=resume,
        force=force,
        reporter=reporter,
        extractor=extractor,
    )
    return run_planned(experiment, runs, options=options, real_row=real_row)


def run_planned(
    experiment: ExperimentConfig,
    runs: list[PlannedRun],
    *,
    options: RunOptions,
    real_row: bool = True,
) -> list[RunOutcome]:
    """Run planned runs of one experiment (its device already applied): skip done or
    locked ones, load the data once, the real-data row, then each run."""
    dev = resolve_device(experiment.train.device)
    dist_info = from_env(dev.type)  # under torchrun: join the group; else a single process
    try:
        return _run_planned(
            runs,
            experiment,
            results_dir=options.results_dir,
            resume=options.resume,
            force=options.force,
            device=dev,
            reporter=options.reporter or Reporter(),
            real_row=real_row,
            dist_info=dist_info,
            extractor=options.extractor,
        )
    finally:
        # Leave the process group (gloo aborts at exit otherwise); wait for the other ranks
        # only on success, since after an error they may be stuck in another collective.
        shutdown(dist_info, wait=sys.exc_info()[0] is None)


def _run_planned(
    runs: list[PlannedRun],
    experiment: ExperimentConfig,
    *,
    results_dir: Path,
    resume: bool,
    force: bool,
    device: torch.device,
    reporter: Reporter,
    real_row: bool,
    dist_info: DistInfo,
    extractor: ExtractorChoice | None,
) -> list[RunOutcome]:
    dev = device
    if dist_info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist_info.local_rank)
    configure_backend(dev, deterministic=experiment.train.deterministic)
    if not dist_info.is_main:
        reporter = Reporter()  # one rank speaks
    results_dir.mkdir(parents=True, exist_ok=True)

    todo, outcomes = [], []
    for r in runs:
        if not force and RunFolder(results_dir / r.run_id).is_done():
            outcomes.append(_skip(r, results_dir / r.run_id, reporter))
        else:
            todo.append(r)
    if not todo:
        return outcomes

    # What scoring will need (extractor weights, disk), then the data and what each model
    # needs of it: a missing piece is an error for the whole command, before any training.
    choice = preflight(experiment, [r.config for r in todo], results_dir, extractor=extractor)
    bundle = _load_data(experiment, reporter)
    check_specs(todo, bundle)
    if choice is not None and dist_info.is_main and real_row:
        real_data_row(bundle, experiment, results_dir, reporter, device=dev, choice=choice)
    for r in todo:
        outcomes.append(
            _run_locked(
                r,
                bundle,
                results_dir / r.run_id,
                force=force,
                resume=resume,
                device=dev,
                reporter=reporter,
                dist_info=dist_info,
                choice=choice,
            )
        )
    return outcomes


def _load_data(experiment: ExperimentConfig, reporter: Reporter) -> DataBundle:
    with reporter.phase("loading data", total=None):
        bundle = load_data(experiment.data)
    if bundle.split["skipped_files"]:
        reporter.warn(
            f"{bundle.split['skipped_files']} unreadable file(s) skipped, e.g. {bundle.split['skipped_examples'][:2]}"
        )
    for note in bundle.split.get("notes", []):
        reporter.warn(note)
    return bundle


def real_data_row(
    bundle: DataBundle,
    experiment: ExperimentConfig,
    results_dir: Path,
    reporter: Reporter,
    *,
    device: torch.device,
    choice: ExtractorChoice,
) -> Path | None:
    """The real-data row (held-out images, scored like a sample set): the floor every
    model is read against. A folder already done is left alone; a failure is reported
    and never stops the models' runs. Returns the folder (None when it failed)."""
    from genbench.metrics.real import real_data_run_id, score_real_data

    folder = RunFolder(results_dir / real_data_run_id(experiment, choice))
    try:
        if folder.is_done():
            reporter.info(f"{folder.name}: already done, skipped")
            return folder.path
        folder.set_status("running")
        scored = score_real_data(
            bundle, experiment, choice=choice, device=device, run_id=folder.name, reporter=reporter
        )
        folder.write_files(scored.files)
        folder.write_metrics(scored.record)
        return folder.path
    except Exception as exc:  # the floor row failing must not stop the models' runs
        reporter.error(f"real-data row failed: {one_line(exc)}")
        return None


def _run_locked(
    r: PlannedRun,
    bundle: DataBundle,
    rd: Path,
    *,
    force: bool,
    resume: bool,
    device: torch.device,
    reporter: Reporter,
    dist_info: DistInfo,
    choice: ExtractorChoice | None,
) -> RunOutcome:
    """One process per run folder: a second `genbench run` skips it instead of waiting.
    Under torchrun rank 0 holds the lock and the other ranks follow its decision."""
    lock = try_lock_run(rd) if dist_info.is_main else None
    if broadcast_object(dist_info, lock is None if dist_info.is_main else None):
        return _skip(r, rd, reporter, error="locked by another genbench process; skipped")
    try:
        if broadcast_object(dist_info, not force and RunFolder(rd).is_done()):
            return _skip(r, rd, reporter)  # another process finished it while data loaded
        return _run_one(
            r,
            bundle,
            rd,
            device=device,
            resume=resume,
            reporter=reporter,
            dist_info=dist_info,
            choice=choice,
        )
    finally:
        if lock is not None:
            lock.release()


def _skip(r: PlannedRun, rd: Path, reporter: Reporter, *, error: str | None = None) -> RunOutcome:
    if error is None:
        reporter.info(f"{r.run_id}: already done, skipped (--force re-runs it)")
    else:
        reporter.warn(f"{r.run_id}: {error}")
    return RunOutcome(r.run_id, r.config.model, r.config.seed, "skipped", error=error, run_dir=rd)


def with_device(experiment: ExperimentConfig, device: str | None) -> ExperimentConfig:
    """--device overrides train.device (and so is part of the run's config and id)."""
    if device is None:
        return experiment
    return experiment.model_copy(
        update={"train": experiment.train.model_copy(update={"device": device})}
    )


def run_grid(
    experiments: list[ExperimentConfig],
    *,
    shard: tuple[int, int] | None = None,
    options: RunOptions,
    experiment_file: str = "experiment",
    device: str | None = None,
) -> list[RunOutcome]:
    """Run a sweep: one experiment per grid point, sharded over the whole (point x model x
    seed) grid, planned once by :func:`plan_grid`."""
    experiments = [with_device(e, device) for e in experiments]
    planned = plan_grid(experiments, shard=shard, experiment_file=experiment_file)
    outcomes: list[RunOutcome] = []
    # Shard 0 (or the unsharded job) also computes the real-data row, once per grid point.
    for i, exp in enumerate(experiments):
        runs = [r for r in planned if r.point == i]
        if runs:
            outcomes += run_planned(
                exp, runs, options=options, real_row=shard is None or shard[0] == 0
            )
    return outcomes


def sweep_points(sweeps: list[str]) -> list[list[str]]:
    """``["ddpm.timesteps=1000,2000", "ddpm.schedule=linear,cosine"]`` -> the grid's --set lists."""
    axes = []
    for item in sweeps:
        key, sep, values = item.partition("=")
        parts = _split_top_level(values)
        if not sep or not key.strip() or not parts:
            raise ConfigError(
                f"--sweep {item!r}: expected KEY=V1,V2,..., e.g. ddpm.timesteps=1000,2000"
            )
        axes.append([f"{key.strip()}={v}" for v in parts])
    return [list(point) for point in itertools.product(*axes)]


def _split_top_level(text: str) -> list[str]:
    # Commas inside [...] or quotes belong to one value: --sweep dcgan.x=[1,2],[3,4]
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return [v for v in out if v]


def select_shard(runs: list[Any], index: int, count: int) -> list[Any]:
    """The index-th of count interleaved slices of the (model x seed) grid, for array jobs.

    Interleaving spreads slow and fast models over the shards; together the slices
    cover every run exactly once. Shard 0 also computes the real-data row.
    """
    if not (count >= 1 and 0 <= index < count):
        raise ConfigError(f"--shard {index}/{count}: expected I/N with 0 <= I < N")
    return runs[index::count]


def _run_one(
    r: PlannedRun,
    bundle: DataBundle,
    rd: Path,
    *,
    device: torch.device,
    resume: bool,
    reporter: Reporter,
    dist_info: DistInfo = SINGLE,
    choice: ExtractorChoice | None = None,
) -> RunOutcome:
    try:
        if r.error is not None:
            raise GenbenchError(r.error)
        assert r.generator_cls is not None
        metrics = execute_run(
            r.config,
            r.generator_cls,
            bundle,
            RunFolder(rd),
            device=device,
            resume=resume,
            reporter=reporter,
            dist_info=dist_info,
            choice=choice,
        )
        return RunOutcome(
            r.run_id, r.config.model, r.config.seed, "done", run_dir=rd, metrics=metrics
        )
    except KeyboardInterrupt:
        set_status(rd, "interrupted", error="interrupted by the user; --resume continues it")
        raise
    except Exception as exc:
        msg = one_line(exc)
        if dist_info.is_main:
            set_status(rd, "failed", error=msg, traceback=traceback.format_exc())
        reporter.error(f"{r.run_id}: failed: {msg}")
        if dist_info.enabled:
            # The other ranks may be waiting in a collective: a failure ends the whole job.
            raise
        return RunOutcome(r.run_id, r.config.model, r.config.seed, "failed", error=msg, run_dir=rd)


def check_specs(runs: list[PlannedRun], bundle: DataBundle) -> None:
    """Raise ConfigError if a planned model rejects the data spec (``Generator.check_spec``)."""
    spec = bundle.spec
    for r in runs:
        if r.generator_cls is None:
            continue
        if r.config.pretrained is not None:
            check_source(r.generator_cls, r.config)
        try:
            model_cfg = r.generator_cls.Config.model_validate(r.config.generator)
            r.generator_cls.check_spec(spec, model_cfg)
        except ValueError as exc:
            raise ConfigError(
                f"{r.config.model} cannot train on this data (data.resolution = "
                f"{spec.resolution}, {spec.channels} channel(s), condition '{spec.condition}'): "
                f"{first_line(exc)}"
            ) from None
        except Exception:  # a plugin's own bug fails only its own run, in execute_run
            continue


__all__ = [
    "PlannedRun",
    "RunOptions",
    "RunOutcome",
    "plan",
    "plan_grid",
    "run_experiment",
    "run_grid",
    "run_planned",
]
