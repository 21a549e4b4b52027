"""The real-data row: N held-out images, disjoint from the reference and from the copy
audit's calibration images, scored like a sample set against the same reference (and
audited like one): the floor every model is read against. Its folder name, whether the
held-out split can fill it, its scoring, and its run folder (status, skip and failure
policy) all live here."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch

from genbench.config import ExperimentConfig
from genbench.data import DataBundle, ImageSet
from genbench.metrics.cache import sha256_tensor
from genbench.metrics.features import cached_features
from genbench.metrics.inception import ExtractorChoice
from genbench.metrics.protocol import SUBSET_SEED, split_description
from genbench.metrics.scoring import ScoredSet, ScoringSetup, score_set, scoring_parts
from genbench.runs.steps import audit_metrics
from genbench.storage.folder import RunFolder
from genbench.utils.errors import one_line
from genbench.utils.naming import run_id
from genbench.utils.progress import Reporter


def real_data_run_id(experiment: ExperimentConfig, choice: ExtractorChoice) -> str:
    """The real-data row's folder name: what it measured (data, N, metric settings and
    extractor) decides its digest, as a run's config decides a run's."""
    # Snapshots are a trained model's: they enter this row's digest at their defaults, so
    # changing them does not redo it (and ids from before this rule keep theirs).
    fields = type(experiment.metrics).model_fields
    at_default = {
        k: f.get_default(call_default_factory=True)
        for k, f in fields.items()
        if k.startswith("snapshot_")
    }
    metrics = experiment.metrics.model_copy(update=at_default).id_dump()
    key = {
        "data": experiment.data.id_dump(),
        "n": experiment.sample.n,
        "metrics": metrics,
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
        "images": "held-out, after the reference",  # v2: no longer training images
    }
    if experiment.metrics.reference == "train":
        # v3: the held-out cut's first images (before, the audit's calibration images)
        key["images"] = "held-out, first of the cut (training-split reference)"
    return run_id(experiment=experiment.name, label=f"real-n{experiment.sample.n}", key=key)


def real_row_shortfall(bundle: DataBundle, experiment: ExperimentConfig) -> str | None:
    """Why the real-data row cannot be scored (None: it can): the held-out split leaves
    fewer than 2 images after the reference."""
    n = experiment.sample.n
    n_ref = experiment.metrics.n_ref or n
    got = len(scoring_parts(bundle, experiment.metrics, n=n)[0].real)
    if got >= 2:
        return None
    return (
        f"the held-out split's {len(bundle.holdout)} images hold {got} for this row once the "
        f"{n_ref}-image reference is taken (the row shares the rest with the copy audit's two "
        f"fresh sets; N_ref + 3 x N = {n_ref + 3 * n} would fit all four): raise "
        "data.holdout_fraction or lower sample.n"
    )


def score_real_data(
    bundle: DataBundle,
    experiment: ExperimentConfig,
    *,
    choice: ExtractorChoice,
    device: torch.device,
    run_id: str,
    reporter: Reporter | None = None,
) -> ScoredSet:
    """The "real data" row: N held-out images, disjoint from the reference and from
    the copy audit's calibration images, scored like a sample set against the same
    reference (and audited like one). The floor a generator that makes fresh
    images from the data distribution can reach.

    Returns its metrics.json record (model "real", ``run_id``) and the units' files;
    the run-folder module writes them."""
    cfg = experiment
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    n = cfg.sample.n
    n_ref = cfg.metrics.n_ref or n
    # The samples' own cut: under either reference the row's images are neither the
    # reference nor the audit's calibration and check images.
    parts, _ = scoring_parts(bundle, cfg.metrics, n=n)
    real = parts.real
    if len(real) < n:
        reporter.warn(f"real-data row: only {len(real)} held-out images left for N = {n}")
    with reporter.phase("real data: features", total=len(real)) as tick:
        feats, _ = cached_features(
            real.images,
            choice=choice,
            device=device,
            describe={**split_description(cfg.data, bundle, "holdout"), "part": "real-data row"},
            batch_size=cfg.metrics.extractor_batch(device),
            on_batch=lambda m: tick(advance=m),
            precision=cfg.metrics.precision,
        )
    setup = ScoringSetup(
        bundle=bundle,
        data_cfg=cfg.data,
        metrics_cfg=cfg.metrics,
        n_ref=n_ref,
        choice=choice,
        device=device,
        reporter=reporter,
    )
    scored = score_set(
        real.images,
        setup,
        features=feats,
        labels=real.labels if bundle.spec.condition == "classes" else None,
        sampling={"sampler": "real-data", "nfe": 0},
        keep_files=True,
        label="real data",
        heldout_positions=parts.positions["real"],  # the audit must not match them to themselves
    )
    metrics = _real_metrics(run_id, cfg, bundle, real, scored.record)
    metrics["scoring"] = {"seconds": round(time.perf_counter() - t0, 3)}
    return ScoredSet(metrics, scored.files)


def _real_metrics(
    rid: str, cfg: ExperimentConfig, bundle: DataBundle, real: ImageSet, res: dict[str, Any]
) -> dict[str, Any]:
    return {
        "run_id": rid,
        "experiment": cfg.name,
        "model": "real",
        "seed": None,
        "sampling": {"sampler": "real-data", "nfe": 0, "n": len(real), "images_per_s": None},
        "data": {"source": cfg.data.source, "resolution": cfg.data.resolution, **bundle.split},
        "real_subset": {
            "split": bundle.split.get("holdout_from", "holdout"),
            "subset_seed": SUBSET_SEED,
            "order": "held-out images in one seeded permutation, after a held-out reference",
            "n": len(real),
            "subset_sha256": sha256_tensor(real.images)[:16],
        },
        **res,
    }


# -- its run folder -------------------------------------------------------------------
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
    model is read against. A folder already done is left alone; one the held-out split
    cannot fill is marked skipped, with why; a failure is marked failed and reported, and
    never stops the models' runs. Returns the folder (None when skipped or failed)."""
    folder = RunFolder(results_dir / real_data_run_id(experiment, choice))
    who = {"model": "real", "experiment": experiment.name}  # a row even without metrics.json
    try:
        if folder.is_done():
            reporter.info(f"{folder.name}: already done, skipped")
            return folder.path
        if why := real_row_shortfall(bundle, experiment):
            folder.set_status("skipped", error=why, **who)
            reporter.warn(f"real-data row skipped: {why}")
            return None
        folder.set_status("running", **who)
        # Scored under the results folder's copy-descriptor seed, as the runs are.
        scoring_cfg = experiment.model_copy(
            update={"metrics": audit_metrics(experiment.metrics, results_dir)}
        )
        scored = score_real_data(
            bundle, scoring_cfg, choice=choice, device=device, run_id=folder.name, reporter=reporter
        )
        folder.write_files(scored.files)
        folder.write_metrics(scored.record)
        return folder.path
    except KeyboardInterrupt:
        folder.set_status("interrupted", error="interrupted by the user", **who)
        raise
    except Exception as exc:  # the floor row failing must not stop the models' runs
        folder.set_status("failed", error=one_line(exc), traceback=traceback.format_exc(), **who)
        reporter.error(f"real-data row failed: {one_line(exc)}")
        return None
