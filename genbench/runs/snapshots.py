"""Snapshot scoring during training: a small sample set scored at chosen points of the
budget, so quality can be plotted against images seen, FLOPs and training seconds
(``snapshots.jsonl``; each snapshot's images under ``snapshots/step-N/``, so every
number can be recomputed from the saved PNGs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from genbench.config import RunConfig
from genbench.contract import Generator
from genbench.data import DataBundle
from genbench.metrics.inception import ExtractorChoice
from genbench.runs.samples import assemble, generate, plan_labels
from genbench.storage.folder import SNAPSHOTS, put_snapshot, snapshot_folder, write_sample_set
from genbench.train.trackers import Trackers
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
    *,
    choice: ExtractorChoice | None = None,
) -> Callable[[int, int, float], None]:
    """``take(step, images_seen, train_seconds)``: score a small sample set now (and hand
    its scores and images to ``trackers``) with the run's extractor ``choice`` (default:
    the one the metrics config chooses)."""
    from genbench.metrics import scoring

    mcfg = cfg.metrics.model_copy(
        update={
            "names": cfg.metrics.snapshot_names,
            "per_class": False,
            "classifier": False,
            "memorization": False,
            # The sampling interval per point, for who-leads-at-this-budget claims (cheap:
            # resamples of features already extracted).
            "bootstrap": cfg.metrics.bootstrap,
        }
    )
    n = cfg.metrics.snapshot_n
    # The final scoring's reference (cached features, shared): KID is unbiased in N and
    # N_ref, so a snapshot's KID lies on the same scale as the final sample set's.
    n_ref = cfg.metrics.n_ref or cfg.sample.n
    seed = cfg.seed + cfg.sample.seed_offset

    def take(step: int, images_seen: int, train_seconds: float) -> None:
        labels = plan_labels(model, bundle.train, n, seed=seed)
        by_batch, info, _ = generate(
            model, n, labels=labels, seed=seed, batch_size=cfg.sample.batch_size
        )
        images, _ = assemble(by_batch, info)
        folder = snapshot_folder(run_dir, step)
        manifest = {"n": n, "seed": seed, "step": step, "kimg": images_seen / 1000}
        write_sample_set(folder, images, {**manifest, "labels": _as_list(labels)})
        scored = scoring.score_images(
            images,
            scoring.ScoringSetup(
                bundle=bundle,
                data_cfg=cfg.data,
                metrics_cfg=mcfg,
                n_ref=n_ref,
                choice=choice or scoring.extractor_for(mcfg),
                device=device,
            ),
            label=f"snapshot {images_seen / 1000:g} kimg",
            out_dir=folder,  # bootstrap.json, beside the images it resamples
        )
        record = {
            "step": step,
            "kimg": images_seen / 1000,
            "train_seconds": round(train_seconds, 3),
            "n": n,
            "n_reference": n_ref,
            "images": f"{folder.parent.name}/{folder.name}",
            "scores": scored["scores"],
            "fingerprint": scored["protocol"].get("fingerprint"),
            "bootstrap": scored.get("bootstrap"),
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


def _as_list(labels: torch.Tensor | None) -> list[int] | None:
    return labels.tolist() if labels is not None else None
