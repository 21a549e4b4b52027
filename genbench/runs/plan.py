"""Planning: an experiment (or a sweep's grid of experiments), ``--device`` and
``--shard`` resolved into the list of runs to do, each with its full config and run id.
:func:`plan_grid` is the one planner: ``genbench run``, its ``--dry-run`` and
:func:`genbench.api.plan` all use it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from genbench import registry
from genbench.config import (
    ExperimentConfig,
    RunConfig,
    build_run_config,
    resolve_model_config,
)
from genbench.config.overrides import check_model_tables
from genbench.contract import Generator, GeneratorConfig
from genbench.utils.errors import ConfigError, GenbenchError, MissingExtra


@dataclass
class PlannedRun:
    config: RunConfig
    generator_cls: type[Generator] | None
    error: str | None = None  # a plugin that failed to load fails only its own runs
    point: int = 0  # which of a sweep's experiments (grid points) the run belongs to

    @property
    def run_id(self) -> str:
        return self.config.run_id


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


def with_device(experiment: ExperimentConfig, device: str | None) -> ExperimentConfig:
    """--device overrides train.device (and so is part of the run's config and id)."""
    if device is None:
        return experiment
    return experiment.model_copy(
        update={"train": experiment.train.model_copy(update={"device": device})}
    )


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


__all__ = ["PlannedRun", "plan", "plan_grid", "select_shard", "sweep_points", "with_device"]
