"""The real-data row: N held-out images, disjoint from the reference and from the copy
audit's calibration images, scored like a sample set against the same reference (and
audited like one): the floor every model is read against."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

import genbench.metrics.scoring as scoring
from genbench.config import ExperimentConfig
from genbench.data import DataBundle, ImageSet
from genbench.metrics.cache import sha256_tensor
from genbench.metrics.features import cached_features
from genbench.metrics.inception import ExtractorChoice
from genbench.metrics.protocol import SUBSET_SEED, split_description
from genbench.metrics.scoring import heldout_parts, score_images
from genbench.rundir import read_status, set_status
from genbench.utils.device import resolve_device
from genbench.utils.files import write_json
from genbench.utils.naming import digest as key_digest
from genbench.utils.progress import Reporter


def real_data_run_id(experiment: ExperimentConfig, choice: ExtractorChoice) -> str:
    key = {
        "data": experiment.data.id_dump(),
        "n": experiment.sample.n,
        "metrics": experiment.metrics.id_dump(),
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
        "images": "held-out, after the reference",  # v2: no longer training images
    }
    return f"{experiment.name}-real-n{experiment.sample.n}-{key_digest(key, 10)}"


def score_real_data(
    bundle: DataBundle,
    experiment_cfg: ExperimentConfig,
    results_dir: Path,
    reporter: Reporter | None = None,
    *,
    device: torch.device | str | None = None,
) -> Path | None:
    """The "real data" row: N held-out images, disjoint from the reference and from
    the copy audit's calibration images, scored like a sample set against the same
    reference (and audited like one). The floor a generator that makes fresh
    images from the data distribution can reach.

    Writes RESULTS/<experiment>-real-n<N>-<hash>/metrics.json (model "real") and
    status.json; a folder already marked done is left alone. Returns the folder,
    or None when metrics are disabled.
    """
    cfg = experiment_cfg
    if not cfg.metrics.enabled:
        return None
    reporter = reporter or Reporter()
    choice = scoring.extractor_for(cfg.metrics)
    rd = results_dir / real_data_run_id(cfg, choice)
    if read_status(rd).get("status") == "done":
        reporter.info(f"{rd.name}: already done, skipped")
        return rd
    dev = resolve_device(cfg.train.device) if device is None else torch.device(device)
    rd.mkdir(parents=True, exist_ok=True)
    set_status(rd, "running")
    t0 = time.perf_counter()
    n = cfg.sample.n
    n_ref = cfg.metrics.n_ref or n
    parts = heldout_parts(bundle.holdout, n_ref=n_ref, n=n)
    real = parts.real
    if len(real) < n:
        reporter.warn(f"real-data row: only {len(real)} held-out images left for N = {n}")
    with reporter.phase("real data: features", total=len(real)) as tick:
        feats, _ = cached_features(
            real.images,
            choice=choice,
            device=dev,
            describe={**split_description(cfg.data, bundle, "holdout"), "part": "real-data row"},
            batch_size=cfg.metrics.extractor_batch(dev),
            on_batch=lambda m: tick(advance=m),
        )
    res = score_images(
        real.images,
        features=feats,
        bundle=bundle,
        data_cfg=cfg.data,
        metrics_cfg=cfg.metrics,
        n_ref=n_ref,
        choice=choice,
        device=dev,
        reporter=reporter,
        labels=real.labels if bundle.spec.condition == "classes" else None,
        sampling={"sampler": "real-data", "nfe": 0},
        out_dir=rd,
        label="real data",
        heldout_positions=parts.positions["real"],  # the audit must not match them to themselves
    )
    metrics = _real_metrics(rd, cfg, bundle, real, res)
    metrics["scoring"] = {"seconds": round(time.perf_counter() - t0, 3)}
    write_json(rd / "metrics.json", metrics)
    set_status(rd, "done")
    return rd


def _real_metrics(
    rd: Path, cfg: ExperimentConfig, bundle: DataBundle, real: ImageSet, res: dict[str, Any]
) -> dict[str, Any]:
    return {
        "run_id": rd.name,
        "experiment": cfg.name,
        "model": "real",
        "seed": None,
        "sampling": {"sampler": "real-data", "nfe": 0, "n": len(real), "images_per_s": None},
        "data": {"source": cfg.data.source, "resolution": cfg.data.resolution, **bundle.split},
        "real_subset": {
            "split": bundle.split.get("holdout_from", "holdout"),
            "subset_seed": SUBSET_SEED,
            "order": "held-out images after the reference in one seeded permutation",
            "n": len(real),
            "subset_sha256": sha256_tensor(real.images)[:16],
        },
        **res,
    }
