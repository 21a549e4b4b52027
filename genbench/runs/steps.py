"""One run, as a pipeline of named steps:

    prepare -> build -> train (or reuse) -> sample -> score -> write
    prepare -> load pretrained weights   -> sample -> score -> write

Under torchrun every rank runs the steps together (training, sampling and the
sample features are split across ranks); rank 0 alone writes the run folder and
scores. Which runs to do, and what a failure means, is :mod:`genbench.runs.grid`'s job.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genbench import registry
from genbench._version import __version__
from genbench.config import MetricsConfig, RunConfig
from genbench.config.files import run_config_toml
from genbench.contract import Generator, GeneratorConfig
from genbench.data import DataBundle
from genbench.runs.pretrained import load_pretrained, train_record
from genbench.runs.samples import assemble, generate, plan_labels
from genbench.runs.snapshots import add_snapshot_flops, snapshot_steps, snapshotter
from genbench.storage.checkpoints import checkpoint_step, latest_checkpoint, restore
from genbench.storage.folder import (
    RunFolder,
    audit_seed,
    copy_training,
    find_trained_twin,
    train_key,
)
from genbench.train.duties import Track
from genbench.train.loop import TrainResult, train
from genbench.train.trackers import Trackers, open_trackers
from genbench.utils.device import precision_record, resolve_device, seed_everything
from genbench.utils.distributed import (
    SINGLE,
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
)
from genbench.utils.errors import ConfigError, GenbenchError
from genbench.utils.files import read_jsonl
from genbench.utils.progress import Reporter

if TYPE_CHECKING:
    from genbench.metrics.inception import ExtractorChoice
    from genbench.metrics.scoring import ScoredSet


@dataclass
class Run:
    """What every step of one run gets: its config, generator, data, folder and place."""

    config: RunConfig
    cls: type[Generator]
    bundle: DataBundle
    folder: RunFolder
    device: torch.device
    reporter: Reporter
    dist_info: DistInfo = SINGLE
    trackers: Trackers | None = None  # rank 0's TensorBoard / W&B copies (train.loggers)
    choice: ExtractorChoice | None = None  # the Inception extractor scoring uses (preflight's)

    @property
    def main(self) -> bool:
        return self.dist_info.is_main

    @property
    def label(self) -> str:
        return f"{self.config.model} s{self.config.seed}"


@dataclass
class Trained:
    result: TrainResult | None  # None: pretrained, not trained under this protocol
    key: str | None  # train_key: runs with the same key share their training
    reused_from: str | None  # the run whose training was copied, if any
    pretrained: dict[str, Any] | None = None  # where pretrained weights came from

    def record(self) -> dict[str, Any]:
        """metrics.json's "train" section."""
        if self.result is None:
            return train_record(self.pretrained or {})
        return {**self.result.to_dict(), "train_key": self.key, "reused_from": self.reused_from}


@dataclass
class Samples:
    images: torch.Tensor  # uint8, N x C x H x W, in index order
    info: list[dict[str, Any]]  # per-image records
    labels: torch.Tensor | None
    seed: int
    seconds: float  # sampling time (the slowest rank's)
    protocol: dict[str, Any]  # the model's sampling_protocol(): sampler, steps, NFE


def execute_run(
    config: RunConfig,
    cls: type[Generator],
    bundle: DataBundle,
    folder: RunFolder,
    *,
    device: torch.device,
    resume: bool,
    reporter: Reporter,
    dist_info: DistInfo = SINGLE,
    choice: ExtractorChoice | None = None,
) -> dict[str, Any]:
    """Do one run; returns its metrics.json record ({} on ranks other than 0). ``choice``:
    the extractor scoring uses (default: the one ``metrics`` chooses)."""
    run = Run(config, cls, bundle, folder, device, reporter, dist_info, choice=choice)
    model_cfg = prepare(run, resume=resume)
    with tracking(run, resume=resume):
        if config.pretrained is not None:
            model, trained = load_weights(run, model_cfg)
        else:
            model = build(run, model_cfg)
            trained = train_or_reuse(run, model, resume=resume)
        samples = sample(run, model)
        features = shared_features(run, samples)
        if not run.main:
            barrier(dist_info)  # wait while rank 0 writes and scores
            return {}
        manifest = sample_manifest(run, model, samples)
        run.folder.write_samples(samples.images, manifest)
        step = trained.result.steps if trained.result is not None else 0  # 0: pretrained
        track(run, step=step, images=samples.images)
        metrics = describe(run, model, trained, samples)
        if config.metrics.enabled:
            scored = score(run, samples, manifest, sampling=metrics["sampling"], features=features)
            run.folder.write_files(scored.files)
            metrics.update(scored.record)
            track(run, step=step, scores=metrics["scores"], protocol=metrics["protocol"])
        write(run, metrics)
    return metrics


def prepare(run: Run, *, resume: bool) -> GeneratorConfig:
    """Check the model fits the data; clean or keep the folder; write the resolved
    config before any training starts."""
    cfg, folder = run.config, run.folder
    if run.main:
        folder.start(resume=resume)  # a fresh start: no old checkpoint may leak in
    model_cfg = run.cls.Config.model_validate(cfg.generator)
    try:
        run.cls.check_spec(run.bundle.spec, model_cfg)
    except ValueError as exc:
        raise ConfigError(f"{cfg.model} cannot train on this data: {exc}") from None
    if run.main:
        folder.write_config(run_config_toml(cfg), run.bundle.split)
        folder.set_status("running", phase="train")
    barrier(run.dist_info)  # every rank sees the cleaned folder before resuming from it
    return model_cfg


@contextmanager
def tracking(run: Run, *, resume: bool) -> Iterator[None]:
    """Rank 0's trackers (``train.loggers``) for the duration of the run, closed as
    failed when the run fails."""
    run.trackers = start_trackers(run, resume=resume) if run.main else None
    ok = False
    try:
        yield
        ok = True
    finally:
        if run.trackers:
            run.trackers.close(failed=not ok)


def start_trackers(run: Run, *, resume: bool) -> Trackers:
    """TensorBoard / W&B for ``train.loggers`` (one that cannot start is a warning)."""
    cfg = run.config
    ckpt = latest_checkpoint(run.folder.path) if resume else None
    # A resume without a checkpoint starts training over: step 0 drops every old event.
    resume_step = (checkpoint_step(ckpt) if ckpt is not None else 0) if resume else None
    return open_trackers(
        cfg.train.loggers,
        run_dir=run.folder.path,
        run_id=cfg.run_id,
        group=cfg.experiment,
        tags=[cfg.model],
        config=cfg.to_dict(),
        resume_step=resume_step,
        warn=lambda msg: run.reporter.warn(f"{cfg.run_id}: {msg}"),
    )


def track(run: Run, *, step: int, **final: Any) -> None:
    """The sample grid, then the final scores and protocol, to the run's trackers."""
    if run.trackers:
        run.trackers.final(step=step, **final)


def build(run: Run, model_cfg: GeneratorConfig) -> Generator:
    seed_everything(run.config.seed)
    b = run.bundle
    return run.cls(spec=b.spec, config=model_cfg, device=run.device, train_data=b.train)


def load_weights(run: Run, model_cfg: GeneratorConfig) -> tuple[Generator, Trained]:
    """Pretrained: the model with weights trained elsewhere; nothing is trained here."""
    seed_everything(run.config.seed)
    b = run.bundle
    model, info = load_pretrained(
        run.cls, run.config, spec=b.spec, config=model_cfg, device=run.device, train_data=b.train
    )
    run.reporter.info(f"{run.config.run_id}: pretrained weights from {run.config.pretrained}")
    return model, Trained(None, None, None, pretrained=info)


def train_or_reuse(run: Run, model: Generator, *, resume: bool) -> Trained:
    """Train, or copy the training of a finished run that differs only in sampling settings."""
    key = train_key(run.config, run.cls)
    twin = find_trained_twin(run.folder.path, key) if run.main and not resume else None
    twin = broadcast_object(run.dist_info, twin)
    if twin is not None:
        twin_dir, twin_train = twin
        restore(model, copy_training(twin_dir, run.folder.path))
        fields = TrainResult.__dataclass_fields__
        result = TrainResult(**{k: v for k, v in twin_train.items() if k in fields})
        run.reporter.info(
            f"{run.config.run_id}: training shared with {twin_dir.name} "
            "(only sampling settings differ)"
        )
        if run.trackers:  # this run's trackers show the shared training too
            for record in read_jsonl(run.folder.train_log):
                run.trackers.training(record)
        return Trained(result, key, twin_dir.name)
    return Trained(_train(run, model, resume=resume), key, None)


def _train(run: Run, model: Generator, *, resume: bool) -> TrainResult:
    cfg = run.config
    steps, take = None, None
    m = cfg.metrics
    if m.enabled and (m.snapshot_kimg or m.snapshot_fractions) and run.main:
        steps = snapshot_steps(cfg)
        take = snapshotter(
            model,
            run.bundle,
            cfg,
            run.folder.path,
            run.device,
            run.trackers,
            choice=extractor(run),
        )
    with run.reporter.phase(f"{run.label} train", total=None) as tick:
        result = train(
            model,
            run.bundle.train,
            cfg.train,
            seed=cfg.seed,
            run_dir=run.folder.path,
            # evaluate() sees the validation slice, never a held-out image (those are the
            # FID reference, the real-data row and the copy audit's fresh images).
            holdout=run.bundle.validation,
            resume=resume,
            on_step=lambda s, total, logs: tick(s, total, logs),
            dist_info=run.dist_info,
            snapshot_steps=steps,
            on_snapshot=take,
            snapshot_fractions=m.snapshot_fractions if take else (),
            duties=[Track(run.trackers.training)] if run.trackers else (),
        )
    if take and result.flops_per_step:
        add_snapshot_flops(run.folder.path, result.flops_per_step)
    return result


def sample(run: Run, model: Generator) -> Samples:
    """The fixed sample set; under torchrun each rank draws its share of the batches
    and all ranks receive the whole set (per-batch noise: the same images as one process)."""
    cfg, dist = run.config.sample, run.dist_info
    if run.main:
        run.folder.set_status("running", phase="sample")
    seed = run.config.seed + cfg.seed_offset
    labels = plan_labels(model, run.bundle.train, cfg.n, seed=seed)
    with run.reporter.phase(f"{run.label} sample", total=cfg.n) as tick:
        n_batches = math.ceil(cfg.n / cfg.batch_size)
        by_batch, info_by_batch, secs = generate(
            model,
            cfg.n,
            labels=labels,
            seed=seed,
            batch_size=cfg.batch_size,
            batches=range(dist.rank, n_batches, dist.world),  # each rank its share
            on_batch=lambda m: tick(advance=m * dist.world),
        )
    gathered = all_gather_objects(dist, (by_batch, info_by_batch, secs))
    for part_images, part_info, _ in gathered:
        by_batch.update(part_images)
        info_by_batch.update(part_info)
    images, info = assemble(by_batch, info_by_batch)
    secs = max(part[2] for part in gathered)
    return Samples(images, info, labels, seed, secs, model.sampling_protocol())


def shared_features(run: Run, samples: Samples) -> dict[str, torch.Tensor] | None:
    """Under torchrun, scoring's main cost, the Inception features, is split across
    ranks like sampling; a single process leaves it to :func:`score`."""
    cfg = run.config
    if not (cfg.metrics.enabled and run.dist_info.enabled):
        return None
    from genbench.metrics import split_features

    label = f"{run.label}: features on {run.dist_info.world} ranks"
    with run.reporter.phase(label, total=None):
        return split_features(
            samples.images,
            cfg.metrics,
            choice=extractor(run),
            device=run.device,
            dist_info=run.dist_info,
        )


def sample_manifest(run: Run, model: Generator, samples: Samples) -> dict[str, Any]:
    """samples/manifest.json: how the sample set was drawn (beside its PNGs)."""
    spec, labels = run.bundle.spec, samples.labels
    return {
        "n": run.config.sample.n,
        "seed": samples.seed,
        "resolution": spec.resolution,
        "channels": spec.channels,
        "sampler": samples.protocol,
        "condition": spec.condition if model.conditional else "none",
        "class_names": list(spec.class_names) if labels is not None else [],
        "labels": labels.tolist() if labels is not None else None,
        "info": samples.info,
    }


def describe(run: Run, model: Generator, trained: Trained, samples: Samples) -> dict[str, Any]:
    """The metrics.json record before scoring: what ran, on what, how fast."""
    cfg, n, secs = run.config, run.config.sample.n, samples.seconds
    params = model.num_parameters()
    return {
        "run_id": cfg.run_id,
        "experiment": cfg.experiment,
        "model": cfg.model,
        "seed": cfg.seed,
        "generator_distribution": registry.entry(cfg.model).distribution,
        # Samples made from training images at sampling time (Generator contract): the
        # report ranks such a model apart and states its copy audit as "by design".
        "derived_from_training": bool(getattr(model, "derived_from_training", False)),
        "parameters": params,
        "parameters_total": sum(params.values()),
        "train": trained.record(),
        "sampling": {
            **samples.protocol,
            "n": n,
            "seconds": round(secs, 3),
            "images_per_s": round(n / secs, 2) if secs > 0 else None,
        },
        "data": {"source": cfg.data.source, "resolution": cfg.data.resolution, **run.bundle.split},
        "environment": environment(run.device, run.dist_info, precision=cfg.train.precision),
        "scores": {},
    }


def extractor(run: Run) -> ExtractorChoice:
    """The extractor preflight resolved, else the one the run's metrics choose."""
    from genbench.metrics import scoring

    return run.choice or scoring.extractor_for(run.config.metrics)


def score(
    run: Run,
    samples: Samples,
    manifest: dict[str, Any],
    *,
    sampling: dict[str, Any],
    features: dict[str, torch.Tensor] | None,
) -> ScoredSet:
    """Scores of the sample set, the images the PNGs in samples/ hold (metrics.json's
    scoring sections, and the units' files for the run folder)."""
    from genbench.metrics.scoring import ScoringSetup, class_labels, score_set

    cfg = run.config
    run.folder.set_status("running", phase="score")
    t0 = time.perf_counter()
    images = samples.images
    if features is not None and any(len(v) != len(images) for v in features.values()):
        raise GenbenchError(f"{run.folder.name}: features do not match the {len(images)} samples")
    setup = ScoringSetup(
        bundle=run.bundle,
        data_cfg=cfg.data,
        metrics_cfg=audit_metrics(cfg.metrics, run.folder.path.parent),
        n_ref=cfg.metrics.n_ref or cfg.sample.n,
        choice=extractor(run),
        device=resolve_device(cfg.train.device),
        reporter=run.reporter,
    )
    scored = score_set(
        images,
        setup,
        labels=class_labels(manifest, len(images)),
        sampling=sampling,
        keep_files=True,
        label=f"{cfg.model} s{cfg.seed}",
        features=features,
    )
    scored.record["scoring"] = {"seconds": round(time.perf_counter() - t0, 3)}
    return scored


def audit_metrics(metrics: MetricsConfig, results_dir: Path) -> MetricsConfig:
    """The metrics settings a run is scored under: the copy descriptor's seed, when the
    config leaves it open, is the results folder's (:func:`folder.audit_seed`)."""
    if not metrics.memorization or metrics.copy_descriptor_seed is not None:
        return metrics
    return metrics.model_copy(update={"copy_descriptor_seed": audit_seed(results_dir)})


def write(run: Run, metrics: dict[str, Any]) -> None:
    """metrics.json, then status done: a folder marked done is complete."""
    run.folder.write_metrics(metrics)
    barrier(run.dist_info)


def environment(
    device: torch.device, dist_info: DistInfo = SINGLE, *, precision: str = "auto"
) -> dict[str, Any]:
    env = {
        "genbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": dist_info.world,
        **precision_record(device, precision),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env
