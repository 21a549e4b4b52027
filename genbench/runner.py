"""Runs an experiment: for each (model, seed), train, sample the fixed set, score,
and write the run folder. One failing run never stops the others."""

from __future__ import annotations

import os
import platform
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genbench import __version__, registry
from genbench.config import (
    ExperimentConfig,
    RunConfig,
    build_run_config,
    check_model_tables,
    resolve_model_config,
    run_config_toml,
)
from genbench.contract import Generator, GeneratorConfig
from genbench.data import DataBundle, load_data
from genbench.device import configure_backend, resolve_device, seed_everything
from genbench.errors import ConfigError, GenbenchError
from genbench.io import read_json, write_json, write_text
from genbench.progress import Reporter
from genbench.sampling import MANIFEST, generate, plan_labels, write_sample_set
from genbench.train.loop import train

STATUS = "status.json"


@dataclass
class PlannedRun:
    config: RunConfig
    generator_cls: type[Generator] | None
    error: str | None = None  # a plugin that failed to load fails only its own runs

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


def plan(experiment: ExperimentConfig, *, experiment_file: str = "experiment") -> list[PlannedRun]:
    """Resolve every (model, seed) run config; unknown models and bad keys are errors here."""
    check_model_tables(experiment)
    planned = []
    for name in experiment.models:
        registry.entry(name)  # unknown names fail loudly, before anything runs
        try:
            cls = registry.load(name)
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


def run_status(run_dir: Path) -> dict[str, Any]:
    p = run_dir / STATUS
    try:
        return read_json(p) if p.exists() else {}
    except ValueError:
        return {}


def run_experiment(
    experiment: ExperimentConfig,
    *,
    results_dir: Path,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    reporter: Reporter | None = None,
    experiment_file: str = "experiment",
) -> list[RunOutcome]:
    reporter = reporter or Reporter()
    if device is not None:
        experiment = experiment.model_copy(
            update={"train": experiment.train.model_copy(update={"device": device})}
        )
    runs = plan(experiment, experiment_file=experiment_file)
    dev = resolve_device(experiment.train.device)
    configure_backend(dev, deterministic=experiment.train.deterministic)
    results_dir.mkdir(parents=True, exist_ok=True)

    todo = []
    outcomes: list[RunOutcome] = []
    for r in runs:
        rd = results_dir / r.run_id
        if not force and run_status(rd).get("status") == "done":
            reporter.info(f"{r.run_id}: already done, skipped (--force re-runs it)")
            outcomes.append(
                RunOutcome(r.run_id, r.config.model, r.config.seed, "skipped", run_dir=rd)
            )
        else:
            todo.append(r)
    if not todo:
        return outcomes

    with reporter.phase("loading data", total=None):
        bundle = load_data(experiment.data)
    if bundle.split["skipped_files"]:
        reporter.warn(
            f"{bundle.split['skipped_files']} unreadable file(s) skipped, e.g. {bundle.split['skipped_examples'][:2]}"
        )

    for r in todo:
        rd = results_dir / r.run_id
        try:
            if r.error is not None:
                raise GenbenchError(r.error)
            metrics = execute_run(r, bundle, rd, device=dev, resume=resume, reporter=reporter)
            outcomes.append(
                RunOutcome(
                    r.run_id, r.config.model, r.config.seed, "done", run_dir=rd, metrics=metrics
                )
            )
        except KeyboardInterrupt:
            _set_status(rd, "interrupted", error="interrupted by the user; --resume continues it")
            raise
        except Exception as exc:
            msg = _one_line(exc)
            _set_status(rd, "failed", error=msg, traceback=traceback.format_exc())
            reporter.error(f"{r.run_id}: failed: {msg}")
            outcomes.append(
                RunOutcome(r.run_id, r.config.model, r.config.seed, "failed", error=msg, run_dir=rd)
            )
    return outcomes


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, GenbenchError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _set_status(run_dir: Path, status: str, **extra: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run_dir / STATUS, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    )


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "genbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def execute_run(
    r: PlannedRun,
    bundle: DataBundle,
    run_dir: Path,
    *,
    device: torch.device,
    resume: bool,
    reporter: Reporter,
) -> dict[str, Any]:
    cfg = r.config
    assert r.generator_cls is not None
    cls = r.generator_cls
    status = run_status(run_dir)
    if not resume and status:
        # A fresh start: an interrupted folder's old checkpoints must not leak in.
        for sub in ("checkpoints", "samples"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = cls.Config.model_validate(cfg.generator)
    try:
        cls.check_spec(bundle.spec, model_cfg)
    except ValueError as exc:
        raise ConfigError(f"{cfg.model} cannot train on this data: {exc}") from None

    # The resolved config is on disk before any training starts.
    write_text(run_dir / "config.toml", run_config_toml(cfg))
    write_json(run_dir / "split.json", bundle.split)
    _set_status(run_dir, "running", phase="train")

    seed_everything(cfg.seed)
    model = cls(spec=bundle.spec, config=model_cfg, device=device, train_data=bundle.train)
    params = model.num_parameters()

    with reporter.phase(f"{cfg.model} s{cfg.seed} train", total=None) as tick:
        result = train(
            model,
            bundle.train,
            cfg.train,
            seed=cfg.seed,
            run_dir=run_dir,
            holdout=bundle.holdout,
            resume=resume,
            on_step=lambda s, total, logs: tick(s, total, logs),
        )

    _set_status(run_dir, "running", phase="sample")
    sample_seed = cfg.seed + cfg.sample.seed_offset
    labels = plan_labels(model, bundle.train, cfg.sample.n, seed=sample_seed)
    with reporter.phase(f"{cfg.model} s{cfg.seed} sample", total=cfg.sample.n) as tick:
        images, info, secs = generate(
            model,
            cfg.sample.n,
            labels=labels,
            seed=sample_seed,
            batch_size=cfg.sample.batch_size,
            on_batch=lambda m: tick(advance=m),
        )
    protocol = model.sampling_protocol()
    manifest = {
        "n": cfg.sample.n,
        "seed": sample_seed,
        "resolution": bundle.spec.resolution,
        "channels": bundle.spec.channels,
        "sampler": protocol,
        "condition": bundle.spec.condition if model.conditional else "none",
        "class_names": list(bundle.spec.class_names) if labels is not None else [],
        "labels": labels.tolist() if labels is not None else None,
        "info": info,
    }
    write_sample_set(run_dir / "samples", images, manifest)

    metrics: dict[str, Any] = {
        "run_id": cfg.run_id,
        "experiment": cfg.experiment,
        "model": cfg.model,
        "seed": cfg.seed,
        "generator_distribution": registry.entry(cfg.model).distribution,
        "parameters": params,
        "parameters_total": sum(params.values()),
        "train": result.to_dict(),
        "sampling": {
            **protocol,
            "n": cfg.sample.n,
            "seconds": round(secs, 3),
            "images_per_s": round(cfg.sample.n / secs, 2) if secs > 0 else None,
        },
        "data": {"source": cfg.data.source, "resolution": cfg.data.resolution, **bundle.split},
        "environment": environment(device),
        "scores": {},
    }
    if cfg.metrics.enabled:
        _set_status(run_dir, "running", phase="score")
        from genbench.metrics import score_run

        metrics.update(score_run(run_dir=run_dir, bundle=bundle, config=cfg, reporter=reporter))
    write_json(run_dir / "metrics.json", metrics)
    _set_status(run_dir, "done")
    return metrics


__all__ = ["MANIFEST", "PlannedRun", "RunOutcome", "plan", "run_experiment", "run_status"]
