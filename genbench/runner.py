"""Runs an experiment: for each (model, seed), train, sample the fixed set, score,
and write the run folder. One failing run never stops the others."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import sys
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
from genbench.distributed import (
    SINGLE,
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
    from_env,
    shutdown,
)
from genbench.errors import ConfigError, GenbenchError
from genbench.io import read_json, write_json, write_text
from genbench.locking import try_lock_run
from genbench.progress import Reporter
from genbench.sampling import MANIFEST, assemble, generate, plan_labels, write_sample_set
from genbench.train.loop import TrainResult, latest_checkpoint, read_log, restore, train

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
    check_model_tables(experiment, registered=set(registry.names()))
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
    only: set[str] | None = None,
    real_row: bool = True,
) -> list[RunOutcome]:
    reporter = reporter or Reporter()
    experiment = with_device(experiment, device)
    runs = plan(experiment, experiment_file=experiment_file)
    if only is not None:
        runs = [r for r in runs if r.run_id in only]
    dev = resolve_device(experiment.train.device)
    dist_info = from_env(dev.type)  # under torchrun: join the group; else a single process
    try:
        return _run_planned(
            runs,
            experiment,
            results_dir=results_dir,
            resume=resume,
            force=force,
            device=dev,
            reporter=reporter,
            real_row=real_row,
            dist_info=dist_info,
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
) -> list[RunOutcome]:
    dev = device
    if dist_info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist_info.local_rank)
    configure_backend(dev, deterministic=experiment.train.deterministic)
    if not dist_info.is_main:
        reporter = Reporter()  # one rank speaks
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
    for note in bundle.split.get("notes", []):
        reporter.warn(note)

    # A model that cannot train on this data (resolution, condition) is a config
    # error for the whole command, before any run starts training.
    check_specs(todo, bundle)

    if experiment.metrics.enabled and dist_info.is_main and real_row:
        # The real-data row (training subset vs held-out): the floor every model is scored against.
        from genbench.metrics import score_real_data

        try:
            score_real_data(bundle, experiment, results_dir, reporter, device=dev)
        except Exception as exc:  # the floor row failing must not stop the models' runs
            reporter.error(f"real-data row failed: {_one_line(exc)}")

    for r in todo:
        rd = results_dir / r.run_id
        # One process per run folder: a second `genbench run` skips it instead of waiting.
        # Under torchrun rank 0 holds the lock and the other ranks follow its decision.
        lock = try_lock_run(rd) if dist_info.is_main else None
        if broadcast_object(dist_info, lock is None if dist_info.is_main else None):
            msg = "locked by another genbench process; skipped"
            reporter.warn(f"{r.run_id}: {msg}")
            outcomes.append(
                RunOutcome(
                    r.run_id, r.config.model, r.config.seed, "skipped", error=msg, run_dir=rd
                )
            )
            continue
        try:
            if broadcast_object(dist_info, not force and run_status(rd).get("status") == "done"):
                # Another process finished it while this one was loading data.
                reporter.info(f"{r.run_id}: already done, skipped (--force re-runs it)")
                outcomes.append(
                    RunOutcome(r.run_id, r.config.model, r.config.seed, "skipped", run_dir=rd)
                )
                continue
            outcomes.append(
                _run_one(
                    r, bundle, rd, device=dev, resume=resume, reporter=reporter, dist_info=dist_info
                )
            )
        finally:
            if lock is not None:
                lock.release()
    return outcomes


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
    experiment_file: str = "experiment",
    **kwargs: Any,
) -> list[RunOutcome]:
    """Run a sweep: one experiment per grid point, sharded over the whole (point x model x seed) grid."""
    experiments = (
        [with_device(e, kwargs.pop("device", None)) for e in experiments]
        if "device" in kwargs
        else experiments
    )
    planned = [
        (i, r)
        for i, exp in enumerate(experiments)
        for r in plan(exp, experiment_file=experiment_file)
    ]
    if shard is not None:
        planned = select_shard(planned, *shard)
    outcomes: list[RunOutcome] = []
    # Shard 0 (or the unsharded job) also computes the real-data row, once per grid point.
    for i, exp in enumerate(experiments):
        ids = {r.run_id for j, r in planned if j == i}
        if ids:
            outcomes += run_experiment(
                exp,
                experiment_file=experiment_file,
                only=ids,
                real_row=shard is None or shard[0] == 0,
                **kwargs,
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
) -> RunOutcome:
    try:
        if r.error is not None:
            raise GenbenchError(r.error)
        metrics = execute_run(
            r, bundle, rd, device=device, resume=resume, reporter=reporter, dist_info=dist_info
        )
        return RunOutcome(
            r.run_id, r.config.model, r.config.seed, "done", run_dir=rd, metrics=metrics
        )
    except KeyboardInterrupt:
        _set_status(rd, "interrupted", error="interrupted by the user; --resume continues it")
        raise
    except Exception as exc:
        msg = _one_line(exc)
        if dist_info.is_main:
            _set_status(rd, "failed", error=msg, traceback=traceback.format_exc())
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
        try:
            model_cfg = r.generator_cls.Config.model_validate(r.config.generator)
            r.generator_cls.check_spec(spec, model_cfg)
        except ValueError as exc:
            raise ConfigError(
                f"{r.config.model} cannot train on this data (data.resolution = "
                f"{spec.resolution}, {spec.channels} channel(s), condition '{spec.condition}'): "
                f"{(str(exc).strip().splitlines() or [''])[0]}"
            ) from None
        except Exception:  # a plugin's own bug fails only its own run, in execute_run
            continue


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


def environment(device: torch.device, dist_info: DistInfo = SINGLE) -> dict[str, Any]:
    env = {
        "genbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": dist_info.world,
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


SNAPSHOTS = "snapshots.jsonl"


def train_key(cfg: RunConfig, cls: type[Generator]) -> str:
    """Digest of everything that shapes training: the run config without its sampling,
    scoring and the generator's sampling-only keys."""
    d = cfg.to_dict()
    for k in ("sample", "metrics"):
        d.pop(k)
    d["generator"] = {k: v for k, v in d["generator"].items() if k not in cls.sampling_keys}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_trained_twin(run_dir: Path, key: str) -> tuple[Path, dict[str, Any]] | None:
    """A finished run in the same results folder whose training this run can reuse."""
    for other in sorted(run_dir.parent.iterdir()):
        if other == run_dir or not (other / "metrics.json").is_file():
            continue
        try:
            m = read_json(other / "metrics.json")
        except ValueError:
            continue
        same = m.get("train", {}).get("train_key") == key
        if same and run_status(other).get("status") == "done" and latest_checkpoint(other):
            return other, m["train"]
    return None


def _copy_training(src: Path, dst: Path) -> None:
    (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(src)
    assert ckpt is not None
    shutil.copy2(ckpt, dst / "checkpoints" / ckpt.name)
    if (src / "train_log.jsonl").is_file():
        shutil.copy2(src / "train_log.jsonl", dst / "train_log.jsonl")


def _snapshotter(
    model: Generator, bundle: DataBundle, cfg: RunConfig, run_dir: Path, device: torch.device
):
    """Score a small sample set at a training snapshot (quality vs images seen / FLOPs)."""
    from genbench.metrics import scoring

    mcfg = cfg.metrics.model_copy(
        update={
            "names": cfg.metrics.snapshot_names,
            "per_class": False,
            "classifier": False,
            "memorization": False,
        }
    )
    n = cfg.metrics.snapshot_n
    seed = cfg.seed + cfg.sample.seed_offset

    def snapshot(step: int, images_seen: int, train_seconds: float) -> None:
        labels = plan_labels(model, bundle.train, n, seed=seed)
        by_batch, info, _ = generate(
            model, n, labels=labels, seed=seed, batch_size=cfg.sample.batch_size
        )
        images, _ = assemble(by_batch, info)
        scored = scoring.score_images(
            images,
            bundle=bundle,
            data_cfg=cfg.data,
            metrics_cfg=mcfg,
            n_ref=n,
            choice=scoring.extractor_for(mcfg),
            device=device,
            audit=False,
            label=f"snapshot {images_seen / 1000:g} kimg",
        )
        record = {
            "step": step,
            "kimg": images_seen / 1000,
            "train_seconds": round(train_seconds, 3),
            "n": n,
            "scores": scored["scores"],
            "fingerprint": scored["protocol"].get("fingerprint"),
        }
        # A resumed run re-takes snapshots after its checkpoint: keep one record per step.
        kept = [r for r in read_log(run_dir / SNAPSHOTS) if r.get("step", 0) < step]
        write_text(run_dir / SNAPSHOTS, "".join(json.dumps(r) + "\n" for r in [*kept, record]))

    return snapshot


def _add_snapshot_flops(run_dir: Path, flops_per_step: int) -> None:
    recs = read_log(run_dir / SNAPSHOTS)
    for r in recs:
        r["flops"] = r["step"] * flops_per_step
    write_text(run_dir / SNAPSHOTS, "".join(json.dumps(r) + "\n" for r in recs))


def execute_run(
    r: PlannedRun,
    bundle: DataBundle,
    run_dir: Path,
    *,
    device: torch.device,
    resume: bool,
    reporter: Reporter,
    dist_info: DistInfo = SINGLE,
) -> dict[str, Any]:
    cfg = r.config
    main = dist_info.is_main
    assert r.generator_cls is not None
    cls = r.generator_cls
    status = run_status(run_dir)
    if not resume and status and main:
        # A fresh start: an interrupted folder's old checkpoints must not leak in.
        for sub in ("checkpoints", "samples"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = cls.Config.model_validate(cfg.generator)
    try:
        cls.check_spec(bundle.spec, model_cfg)
    except ValueError as exc:
        raise ConfigError(f"{cfg.model} cannot train on this data: {exc}") from None

    # The resolved config is on disk before any training starts.
    if main:
        write_text(run_dir / "config.toml", run_config_toml(cfg))
        write_json(run_dir / "split.json", bundle.split)
        _set_status(run_dir, "running", phase="train")
    barrier(dist_info)  # every rank sees the cleaned folder before resuming from it

    seed_everything(cfg.seed)
    model = cls(spec=bundle.spec, config=model_cfg, device=device, train_data=bundle.train)
    params = model.num_parameters()

    snap_steps, on_snapshot = None, None
    if cfg.metrics.enabled and cfg.metrics.snapshot_kimg and main:
        snap_steps = [
            max(1, round(k * 1000 / cfg.train.batch_size)) for k in cfg.metrics.snapshot_kimg
        ]
        on_snapshot = _snapshotter(model, bundle, cfg, run_dir, device)
    tkey = train_key(cfg, cls)
    reused = find_trained_twin(run_dir, tkey) if main and not resume else None
    reused = broadcast_object(dist_info, reused)
    if reused is not None:
        # Same training, other sampling settings: re-sample the finished model.
        twin_dir, twin_train = reused
        _copy_training(twin_dir, run_dir)
        restore(model, latest_checkpoint(run_dir))
        result = TrainResult(
            **{k: v for k, v in twin_train.items() if k in TrainResult.__dataclass_fields__}
        )
        reporter.info(
            f"{cfg.run_id}: training shared with {twin_dir.name} (only sampling settings differ)"
        )
    else:
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
                dist_info=dist_info,
                snapshot_steps=snap_steps,
                on_snapshot=on_snapshot,
            )
        if snap_steps and result.flops_per_step:
            _add_snapshot_flops(run_dir, result.flops_per_step)

    if main:
        _set_status(run_dir, "running", phase="sample")
    sample_seed = cfg.seed + cfg.sample.seed_offset
    labels = plan_labels(model, bundle.train, cfg.sample.n, seed=sample_seed)
    with reporter.phase(f"{cfg.model} s{cfg.seed} sample", total=cfg.sample.n) as tick:
        n_batches = math.ceil(cfg.sample.n / cfg.sample.batch_size)
        by_batch, info_by_batch, secs = generate(
            model,
            cfg.sample.n,
            labels=labels,
            seed=sample_seed,
            batch_size=cfg.sample.batch_size,
            batches=range(dist_info.rank, n_batches, dist_info.world),  # each rank its share
            on_batch=lambda m: tick(advance=m * dist_info.world),
        )
    # Per-batch noise streams: the gathered set equals a single process's, image for image.
    gathered = all_gather_objects(dist_info, (by_batch, info_by_batch, secs))
    for part_images, part_info, _ in gathered:
        by_batch.update(part_images)
        info_by_batch.update(part_info)
    secs = max(part[2] for part in gathered)
    images, info = assemble(by_batch, info_by_batch)
    sample_features = None
    if cfg.metrics.enabled and dist_info.enabled:
        from genbench.metrics import split_features

        # Scoring's main cost, the Inception features, is split across ranks like sampling.
        label = f"{cfg.model} s{cfg.seed}: features on {dist_info.world} ranks"
        with reporter.phase(label, total=None):
            sample_features = split_features(
                images, cfg.metrics, device=device, dist_info=dist_info
            )
    if not main:
        barrier(dist_info)  # wait while rank 0 writes and scores
        return {}
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
        "train": {
            **result.to_dict(),
            "train_key": tkey,
            "reused_from": reused[0].name if reused else None,
        },
        "sampling": {
            **protocol,
            "n": cfg.sample.n,
            "seconds": round(secs, 3),
            "images_per_s": round(cfg.sample.n / secs, 2) if secs > 0 else None,
        },
        "data": {"source": cfg.data.source, "resolution": cfg.data.resolution, **bundle.split},
        "environment": environment(device, dist_info),
        "scores": {},
    }
    if cfg.metrics.enabled:
        _set_status(run_dir, "running", phase="score")
        from genbench.metrics import score_run

        t_score = time.perf_counter()
        metrics.update(
            score_run(
                run_dir=run_dir,
                bundle=bundle,
                config=cfg,
                reporter=reporter,
                sampling=metrics["sampling"],
                features=sample_features,
            )
        )
        metrics["scoring"] = {"seconds": round(time.perf_counter() - t_score, 3)}
    write_json(run_dir / "metrics.json", metrics)
    _set_status(run_dir, "done")
    barrier(dist_info)
    return metrics


__all__ = ["MANIFEST", "PlannedRun", "RunOutcome", "plan", "run_experiment", "run_status"]
