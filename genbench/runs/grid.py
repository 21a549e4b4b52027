"""Runs a sweep's planned runs. Per grid point: join the process group, skip the runs that
are done, check what scoring will need (:mod:`genbench.runs.preflight`), load the data
once, score the real-data row, then do each run (:func:`genbench.runs.steps.execute_run`)
under its lock. One failing run never stops the others."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genbench.config import ExperimentConfig
from genbench.data import DataBundle, load_data
from genbench.runs.plan import PlannedRun, plan_grid, with_device
from genbench.runs.preflight import check_specs, preflight
from genbench.runs.real import real_data_row
from genbench.runs.steps import execute_run
from genbench.storage.folder import RunFolder, set_status, try_lock_run
from genbench.utils.device import configure_backend, resolve_device
from genbench.utils.distributed import DistInfo, broadcast_object, from_env, shutdown
from genbench.utils.errors import GenbenchError, one_line
from genbench.utils.progress import Reporter

if TYPE_CHECKING:
    from genbench.metrics.inception import ExtractorChoice


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


def run_grid(
    experiments: list[ExperimentConfig],
    *,
    options: RunOptions,
    shard: tuple[int, int] | None = None,
    device: str | None = None,
    experiment_file: str = "experiment",
    only: set[str] | None = None,
    real_row: bool | None = None,
) -> list[RunOutcome]:
    """Run a sweep: one experiment per grid point, sharded over the whole (point x model x
    seed) grid, planned once by :func:`~genbench.runs.plan.plan_grid` (``only``: just these
    run ids). Shard 0 (or the unsharded job) also scores the real-data row, once per grid
    point (``real_row`` says otherwise)."""
    experiments = [with_device(e, device) for e in experiments]
    planned = plan_grid(experiments, shard=shard, experiment_file=experiment_file)
    if only is not None:
        planned = [r for r in planned if r.run_id in only]
    if real_row is None:
        real_row = shard is None or shard[0] == 0
    outcomes: list[RunOutcome] = []
    for i, exp in enumerate(experiments):
        runs = [r for r in planned if r.point == i]
        if runs:
            outcomes += run_point(exp, runs, options=options, real_row=real_row)
    return outcomes


def run_point(
    experiment: ExperimentConfig, runs: list[PlannedRun], *, options: RunOptions, real_row: bool
) -> list[RunOutcome]:
    """One grid point's planned runs (its device applied): skip the done ones; before any
    training, the preflight, the data (loaded once) and what each model needs of it (a
    missing piece is an error for the whole command); the real-data row; then each run."""
    results, force = options.results_dir, options.force
    with process_group(experiment) as (dev, dist_info):
        reporter = (options.reporter or Reporter()) if dist_info.is_main else Reporter()
        results.mkdir(parents=True, exist_ok=True)
        todo, outcomes = _split_done(runs, results, force=force, reporter=reporter)
        if not todo:
            return outcomes
        configs = [r.config for r in todo]
        choice = preflight(experiment, configs, results, extractor=options.extractor)
        bundle = _load_data(experiment, reporter)
        check_specs(todo, bundle)
        if choice is not None and dist_info.is_main and real_row:
            real_data_row(bundle, experiment, results, reporter, device=dev, choice=choice)
        for r in todo:
            rd = results / r.run_id
            with run_lock(rd, dist_info) as held:
                if not held:
                    error = "locked by another genbench process; skipped"
                    outcomes.append(_skip(r, rd, reporter, error=error))
                    continue
                if broadcast_object(dist_info, not force and RunFolder(rd).is_done()):
                    outcomes.append(_skip(r, rd, reporter))  # finished while the data loaded
                    continue
                with run_failures(r, rd, reporter, dist_info, outcomes):
                    if r.error is not None:
                        raise GenbenchError(r.error)
                    assert r.generator_cls is not None
                    metrics = execute_run(
                        r.config,
                        r.generator_cls,
                        bundle,
                        RunFolder(rd),
                        device=dev,
                        resume=options.resume,
                        reporter=reporter,
                        dist_info=dist_info,
                        choice=choice,
                    )
                    outcomes.append(_outcome(r, "done", rd, metrics=metrics))
    return outcomes


# params: api.run's options, for one experiment
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
    options = RunOptions(
        results_dir=results_dir,
        resume=resume,
        force=force,
        reporter=reporter,
        extractor=extractor,
    )
    return run_grid(
        [experiment],
        options=options,
        device=device,
        experiment_file=experiment_file,
        only=only,
        real_row=real_row,
    )


# -- around each grid point and each run ------------------------------------------------
@contextmanager
def process_group(experiment: ExperimentConfig) -> Iterator[tuple[torch.device, DistInfo]]:
    """The device and, under torchrun, the process group (else a single process). The
    group is left afterwards (gloo aborts at exit otherwise), waiting for the other ranks
    only on success: after an error they may be stuck in another collective."""
    dev = resolve_device(experiment.train.device)
    dist_info = from_env(dev.type)
    ok = False
    try:
        if dist_info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", dist_info.local_rank)
        configure_backend(dev, deterministic=experiment.train.deterministic)
        yield dev, dist_info
        ok = True
    finally:
        shutdown(dist_info, wait=ok)


@contextmanager
def run_lock(rd: Path, dist_info: DistInfo) -> Iterator[bool]:
    """One process per run folder: a second ``genbench run`` skips it (False) instead of
    waiting. Under torchrun rank 0 holds the lock and the other ranks follow its decision."""
    lock = try_lock_run(rd) if dist_info.is_main else None
    held = not broadcast_object(dist_info, lock is None if dist_info.is_main else None)
    try:
        yield held
    finally:
        if lock is not None:
            lock.release()


@contextmanager
def run_failures(
    r: PlannedRun, rd: Path, reporter: Reporter, dist_info: DistInfo, outcomes: list[RunOutcome]
) -> Iterator[None]:
    """A failing run fails alone: status failed (with the error and its traceback), one
    line on the console and a failed outcome. Ctrl-C marks the run interrupted and stops.
    Under torchrun a failure ends the whole job: the other ranks may wait in a collective."""
    try:
        yield
    except KeyboardInterrupt:
        set_status(rd, "interrupted", error="interrupted by the user; --resume continues it")
        raise
    except Exception as exc:
        msg = one_line(exc)
        if dist_info.is_main:
            set_status(rd, "failed", error=msg, traceback=traceback.format_exc())
        reporter.error(f"{r.run_id}: failed: {msg}")
        if dist_info.enabled:
            raise
        outcomes.append(_outcome(r, "failed", rd, error=msg))


def _outcome(r: PlannedRun, status: str, rd: Path, **kw: Any) -> RunOutcome:
    return RunOutcome(r.run_id, r.config.model, r.config.seed, status, run_dir=rd, **kw)


def _skip(r: PlannedRun, rd: Path, reporter: Reporter, *, error: str | None = None) -> RunOutcome:
    if error is None:
        reporter.info(f"{r.run_id}: already done, skipped (--force re-runs it)")
    else:
        reporter.warn(f"{r.run_id}: {error}")
    return _outcome(r, "skipped", rd, error=error)


def _split_done(
    runs: list[PlannedRun], results: Path, *, force: bool, reporter: Reporter
) -> tuple[list[PlannedRun], list[RunOutcome]]:
    """(the runs to do, the skipped outcomes of those already done; --force does them all)."""
    todo, skipped = [], []
    for r in runs:
        if not force and RunFolder(results / r.run_id).is_done():
            skipped.append(_skip(r, results / r.run_id, reporter))
        else:
            todo.append(r)
    return todo, skipped


# -- the data ---------------------------------------------------------------------------
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


__all__ = [
    "RunOptions",
    "RunOutcome",
    "run_experiment",
    "run_grid",
    "run_point",
]
