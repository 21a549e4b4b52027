"""Snapshot scoring during training: a small sample set scored at chosen kimg, so
quality can be plotted against images seen and FLOPs (``snapshots.jsonl``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from genbench.config import RunConfig
from genbench.contract import Generator
from genbench.data import DataBundle
from genbench.rundir import SNAPSHOTS, put_snapshot
from genbench.sampling import assemble, generate, plan_labels
from genbench.trackers import Trackers
from genbench.utils.files import read_jsonl, write_jsonl


def snapshot_steps(cfg: RunConfig) -> list[int]:
    """The train steps at ``metrics.snapshot_kimg``."""
    return [max(1, round(k * 1000 / cfg.train.batch_size)) for k in cfg.metrics.snapshot_kimg]


def snapshotter(
    model: Generator,
    bundle: DataBundle,
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    trackers: Trackers | None = None,
) -> Callable[[int, int, float], None]:
    """``take(step, images_seen, train_seconds)``: score a small sample set now (and hand
    its scores and images to ``trackers``)."""
    from genbench.metrics import scoring

    mcfg = cfg.metrics.model_copy(
        update={
            "names": cfg.metrics.snapshot_names,
            "per_class": False,
            "classifier": False,
            "memorization": False,
            "bootstrap": 0,  # snapshots trace a curve; the final set carries the intervals
        }
    )
    n = cfg.metrics.snapshot_n
    seed = cfg.seed + cfg.sample.seed_offset

    def take(step: int, images_seen: int, train_seconds: float) -> None:
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
        put_snapshot(run_dir / SNAPSHOTS, record)
        if trackers:
            trackers.snapshot(step=step, scores=scored["scores"], images=images)

    return take


def add_snapshot_flops(run_dir: Path, flops_per_step: int) -> None:
    """FLOPs are counted once training starts; add them to the snapshot records after."""
    recs = read_jsonl(run_dir / SNAPSHOTS)
    for r in recs:
        r["flops"] = r["step"] * flops_per_step
    write_jsonl(run_dir / SNAPSHOTS, recs)
