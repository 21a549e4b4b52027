"""``genbench score``: a folder of image files scored under genbench's protocol, against
an experiment's reference (its data, metric settings and N_ref) or a data source's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import genbench.metrics.scoring as scoring
from genbench.config import DataConfig, MetricsConfig
from genbench.metrics.inception import ExtractorChoice
from genbench.metrics.scoring import ScoringSetup, class_labels, score_images
from genbench.storage.images import image_files, read_images
from genbench.utils.device import resolve_device
from genbench.utils.errors import GenbenchError
from genbench.utils.files import read_json
from genbench.utils.progress import Reporter


def score_folder(
    images_dir: Path,
    *,
    ref: str,
    inception_weights: str | Path | None = None,
    device: str = "auto",
    n_ref: int | None = None,
    out_dir: Path | None = None,
    reporter: Reporter | None = None,
    choice: ExtractorChoice | None = None,
) -> dict[str, Any]:
    """Score a folder of images under genbench's protocol.

    ``ref`` is an experiment (name or TOML path: its data, metrics settings and
    N_ref = sample.n) or a data source name (``genbench list``; the folder's
    resolution, N_ref = the number of images). A manifest.json with class labels
    beside the images (as genbench writes) enables per-class scores. ``choice``: the
    extractor (default: the one the reference's metrics and ``inception_weights`` choose).
    """
    from genbench.data import load_data

    reporter = reporter or Reporter()
    images = read_images(image_files(Path(images_dir)))
    n = len(images)
    data_cfg, metrics_cfg, n_ref = _folder_reference(ref, images, n_ref=n_ref, reporter=reporter)
    bundle = load_data(data_cfg)
    manifest_path = Path(images_dir) / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    labels = class_labels(manifest, n) if bundle.spec.condition == "classes" else None
    setup = ScoringSetup(
        bundle=bundle,
        data_cfg=data_cfg,
        metrics_cfg=metrics_cfg,
        n_ref=n_ref,
        choice=choice or scoring.extractor_for(metrics_cfg, inception_weights=inception_weights),
        device=resolve_device(device),
        reporter=reporter,
    )
    return score_images(
        images,
        setup,
        labels=labels,
        sampling=manifest.get("sampler") if isinstance(manifest.get("sampler"), dict) else None,
        out_dir=out_dir,
        label=Path(images_dir).name or "images",
    )


def _folder_reference(
    ref: str, images: torch.Tensor, *, n_ref: int | None, reporter: Reporter
) -> tuple[DataConfig, MetricsConfig, int]:
    """``--ref``: a data source (default metrics, N_ref = N) or an experiment (its data,
    metrics and N_ref; a different N is warned about, as its FID bias differs)."""
    from genbench.config import find_experiment, load_experiment
    from genbench.data.sources import SOURCES

    n = len(images)
    if ref in SOURCES:
        return DataConfig(source=ref, resolution=images.shape[-1]), MetricsConfig(), n_ref or n
    try:
        exp = load_experiment(str(find_experiment(ref)))
    except GenbenchError as exc:
        raise GenbenchError(
            f"--ref {ref!r} is neither a data source ({', '.join(SOURCES)}) nor an experiment: {exc}"
        ) from None
    if n != exp.sample.n:
        reporter.warn(
            f"{n} images vs the experiment's sample.n = {exp.sample.n}: the protocol (and FID bias) "
            "differs, so these scores are not comparable with its runs"
        )
    return exp.data, exp.metrics, n_ref or exp.metrics.n_ref or exp.sample.n
