"""Scoring a set of images against the held-out split of the data, under one
recorded protocol: for a run's saved samples, for the real-data floor, and for
any folder of images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from PIL import Image

from genbench.config import DataConfig, ExperimentConfig, MetricsConfig, RunConfig
from genbench.data import DataBundle, ImageSet
from genbench.data.sources import IMAGE_EXTENSIONS
from genbench.data.transforms import set_channels
from genbench.device import resolve_device
from genbench.distributed import DistInfo, all_gather_objects
from genbench.errors import GenbenchError
from genbench.io import read_json, write_json
from genbench.metrics.audit import memorization_audit
from genbench.metrics.cache import key_digest, sha256_tensor
from genbench.metrics.classifier import ClassifierSettings, class_consistency, get_classifier
from genbench.metrics.features import cached_features, extract_features
from genbench.metrics.fidelity import FidelitySettings, fidelity_from_features
from genbench.metrics.inception import ExtractorChoice, choose_extractor
from genbench.metrics.protocol import fingerprint
from genbench.progress import Reporter
from genbench.rundir import set_status

#: Seed of the random subsets of real images (reference set, training subsets); recorded.
SUBSET_SEED = 0
STATUS = "status.json"


# -- inputs ------------------------------------------------------------------------
def load_images(files: list[Path]) -> torch.Tensor:
    """Image files -> uint8 N x C x H x W; C = 1 if every file is grayscale, else 3."""
    if not files:
        raise GenbenchError("no images to score")
    pil = []
    for f in files:
        try:
            with Image.open(f) as im:
                pil.append(
                    im.convert("L")
                    if im.mode in ("1", "L", "LA", "I", "I;16", "F")
                    else im.convert("RGB")
                )
        except OSError as exc:
            raise GenbenchError(f"cannot read image {f}: {exc}") from None
    rgb = any(im.mode == "RGB" for im in pil)
    arrs = [np.asarray(im.convert("RGB") if rgb else im) for im in pil]
    sizes = {a.shape[:2] for a in arrs}
    if len(sizes) > 1:
        raise GenbenchError(
            f"images differ in size ({sorted(sizes)[:3]}...); score one size at a time"
        )
    t = torch.from_numpy(np.stack(arrs))
    return t.permute(0, 3, 1, 2).contiguous() if rgb else t[:, None].contiguous()


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise GenbenchError(f"{folder} is not a folder")
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def seeded_subset(images: ImageSet, n: int, *, seed: int = SUBSET_SEED) -> ImageSet:
    """The first n of a seeded permutation (all of them if n >= len), in source order."""
    if n >= len(images):
        return images
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images.subset(idx.sort().values)


def train_pool(train: ImageSet, size: int, *, seed: int = SUBSET_SEED) -> ImageSet:
    """The first ``size`` training images of a seeded permutation, in permutation order,
    so a smaller pool is a prefix of a larger one (the real-data row and the
    memorization audit share one cached feature extraction)."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size]
    return train.subset(idx)


def pool_size(metrics_cfg: MetricsConfig, n: int) -> int:
    """Training images whose features are extracted: N for the real-data row, the audit cap."""
    return max(n, metrics_cfg.memorization_max_train if metrics_cfg.memorization else 0)


def _pool_features(
    pool: ImageSet,
    *,
    bundle: DataBundle,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    choice: ExtractorChoice,
    device: torch.device,
    reporter: Reporter,
    label: str,
) -> dict[str, torch.Tensor]:
    with reporter.phase(f"{label}: training-image features", total=len(pool)) as tick:
        feats, hit = cached_features(
            pool.images,
            choice=choice,
            device=device,
            describe={**_describe(data_cfg, bundle, "train"), "order": "permutation"},
            batch_size=metrics_cfg.batch_size,
            on_batch=lambda m: tick(advance=m),
        )
        if hit:
            tick(len(pool), len(pool))
    return feats


def settings_from(cfg: MetricsConfig) -> FidelitySettings:
    return FidelitySettings(
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
        isc_splits=cfg.isc_splits,
        prc_neighborhood=cfg.prc_neighborhood,
    )


def extractor_for(
    cfg: MetricsConfig, *, inception_weights: str | Path | None = None
) -> ExtractorChoice:
    """The extractor a metrics config asks for (``inception_weights`` overrides the config's)."""
    weights = str(inception_weights) if inception_weights else cfg.inception_weights
    return choose_extractor(mode=cfg.inception, weights=weights, download=cfg.download_weights)


def _describe(data_cfg: DataConfig, bundle: DataBundle, part: str) -> dict[str, Any]:
    split = bundle.split
    return {
        "dataset": data_cfg.source,
        "split": split.get(f"{part}_from", part),
        "split_method": split.get("method"),
        "index_sha256": split.get(f"{part}_index_sha256"),
        "subset_seed": SUBSET_SEED,
    }


def _class_labels(manifest: dict[str, Any], n: int) -> torch.Tensor | None:
    """Intended integer class labels of a conditional sample set, if it has them."""
    labels = manifest.get("labels")
    if manifest.get("condition") != "classes" or not isinstance(labels, list) or len(labels) != n:
        return None
    if not all(isinstance(x, int) for x in labels):
        return None  # class mixtures: no single intended class
    return torch.tensor(labels, dtype=torch.long)


# -- the core -----------------------------------------------------------------------
def score_images(
    images: torch.Tensor,
    *,
    bundle: DataBundle,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    n_ref: int,
    choice: ExtractorChoice,
    device: torch.device,
    reporter: Reporter | None = None,
    labels: torch.Tensor | None = None,
    sampling: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    label: str = "samples",
    audit: bool = True,
    features: dict[str, torch.Tensor] | None = None,
    train_pool_size: int | None = None,
) -> dict[str, Any]:
    """Score uint8 images against a seeded subset of ``n_ref`` held-out images.

    Returns ``scores`` (fid, kid {mean, std}, precision, recall, f_score,
    isc {mean, std}, plus per-class means, class consistency and memorization
    rates when computed; a metric that cannot be computed is None with its reason
    in ``scores_unavailable``), ``protocol`` (with its ``fingerprint``),
    ``per_class``, ``class_consistency``, ``memorization`` and ``warnings``.

    ``features`` are the images' features when already known (cached real
    images, or a sample set's features gathered from several ranks; generated
    features are never cached); ``train_pool_size`` sizes the cached training-feature pool the
    audit takes its first ``memorization_max_train`` images from.
    """
    reporter = reporter or Reporter()
    spec = bundle.spec
    notes: list[str] = []

    def warn(msg: str) -> None:
        notes.append(msg)
        reporter.warn(f"{label}: {msg}")

    if images.ndim != 4 or images.dtype != torch.uint8:
        raise GenbenchError(
            f"expected uint8 N x C x H x W images, got {images.dtype} {tuple(images.shape)}"
        )
    if tuple(images.shape[-2:]) != (spec.resolution, spec.resolution):
        raise GenbenchError(
            f"images are {images.shape[-1]}x{images.shape[-2]} but the reference data is "
            f"{spec.resolution}x{spec.resolution}; score at the data's resolution"
        )
    n = len(images)
    names = list(metrics_cfg.names)
    settings = settings_from(metrics_cfg)
    if n_ref > len(bundle.holdout):
        warn(
            f"only {len(bundle.holdout)} held-out images; N_ref = {len(bundle.holdout)} instead of {n_ref}"
        )
    ref = seeded_subset(bundle.holdout, n_ref)
    if n != len(ref):
        warn(f"N = {n} generated vs N_ref = {len(ref)} reference images")
    # Pixel-space comparisons happen in the data's channel count.
    native = set_channels(images, spec.channels) if images.shape[1] != spec.channels else images

    with reporter.phase(f"{label}: reference features", total=len(ref)) as tick:
        ref_feats, hit = cached_features(
            ref.images,
            choice=choice,
            device=device,
            describe=_describe(data_cfg, bundle, "holdout"),
            batch_size=metrics_cfg.batch_size,
            on_batch=lambda m: tick(advance=m),
        )
        if hit:
            tick(len(ref), len(ref))
    t0 = time.perf_counter()
    if features is not None:
        gen_feats = features
    else:
        with reporter.phase(f"{label}: features", total=n) as tick:
            gen_feats = extract_features(
                images,
                choice=choice,
                device=device,
                batch_size=metrics_cfg.batch_size,
                on_batch=lambda m: tick(advance=m),
            )
    feature_seconds = time.perf_counter() - t0 if features is None else None

    fr = fidelity_from_features(
        gen_feats,
        ref_feats,
        names=names,
        feature_layer=choice.feature_layer,
        logits_layer=choice.logits_layer,
        settings=settings,
    )
    for w in fr.warnings:
        warn(w)
    scores = dict(fr.scores)
    unavailable = dict(fr.unavailable)
    result: dict[str, Any] = {}

    # Per-class FID/KID: samples with their intended class vs held-out images of that class.
    if labels is not None and metrics_cfg.per_class and ref.labels is not None:
        result["per_class"] = per_class_scores(
            gen_feats[choice.feature_layer],
            labels,
            ref_feats[choice.feature_layer],
            ref.labels,
            class_names=spec.class_names,
            settings=settings,
        )
        scores["fid_class_mean"] = result["per_class"]["fid_mean"]
        scores["kid_class_mean"] = result["per_class"]["kid_mean"]

    if metrics_cfg.classifier and spec.condition == "classes" and bundle.train.labels is not None:
        with reporter.phase(f"{label}: class consistency", total=None):
            csettings = ClassifierSettings(steps=metrics_cfg.classifier_steps)
            model, info = get_classifier(
                bundle.train,
                bundle.holdout,
                describe=_describe(data_cfg, bundle, "train"),
                device=device,
                settings=csettings,
            )
            cc = class_consistency(
                model,
                native,
                labels,
                class_names=spec.class_names,
                settings=csettings,
                device=device,
            )
        result["class_consistency"] = {**cc, "classifier": info}
        if labels is not None:
            scores["class_consistency"] = cc["accuracy"]

    if audit and metrics_cfg.memorization:
        result["memorization"] = _memorization(
            gen_feats[choice.feature_layer],
            native,
            ref_feats[choice.feature_layer],
            ref.images,
            bundle=bundle,
            data_cfg=data_cfg,
            metrics_cfg=metrics_cfg,
            choice=choice,
            device=device,
            reporter=reporter,
            out_dir=out_dir,
            label=label,
            pool_size=max(train_pool_size or 0, metrics_cfg.memorization_max_train),
        )
        scores["memorization"] = result["memorization"]["feature"]["rate"]
        scores["memorization_pixel"] = result["memorization"]["pixel"]["rate"]

    protocol: dict[str, Any] = {
        "torch_fidelity": torch_fidelity.__version__,
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
        "weights_source": choice.source,
        "extractor_reason": choice.reason,
        "feature_layer": choice.feature_layer,
        "dtype": "float32",
        "n_generated": n,
        "n_reference": len(ref),
        "reference": {
            **_describe(data_cfg, bundle, "holdout"),
            "subset_sha256": sha256_tensor(ref.images)[:16],
        },
        "resolution": spec.resolution,
        "channels": spec.channels,
        "channel_handling": (
            "grayscale replicated to RGB for the extractor" if spec.channels == 1 else "RGB"
        )
        + (f"; images had {images.shape[1]} channels" if images.shape[1] != spec.channels else ""),
        "settings": {**settings.to_dict(), **fr.used},
        "sampling": dict(sampling or {}),
        "extract_seconds": round(feature_seconds, 2) if feature_seconds else None,
        "extract_images_per_s": round(n / feature_seconds, 2) if feature_seconds else None,
        "device": str(device),
    }
    protocol["fingerprint"] = fingerprint(protocol)
    if choice.notes:
        protocol["notes"] = list(choice.notes)
    return {
        "scores": scores,
        "scores_unavailable": unavailable,
        "protocol": protocol,
        **result,
        "warnings": notes,
    }


def per_class_scores(
    gen: torch.Tensor,
    gen_labels: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    *,
    class_names: tuple[str, ...],
    settings: FidelitySettings,
) -> dict[str, Any]:
    """FID and KID per class, and their means over the classes where they could be computed."""
    classes: dict[str, Any] = {}
    for i, name in enumerate(class_names):
        g, r = gen[gen_labels == i], ref[ref_labels == i]
        res = fidelity_from_features(
            {"f": g},
            {"f": r},
            names=["fid", "kid"],
            feature_layer="f",
            logits_layer=None,
            settings=settings,
            low_rank_fid=True,
        )
        classes[name] = {
            "n": len(g),
            "n_ref": len(r),
            "fid": res.scores.get("fid"),
            "kid": res.scores.get("kid"),
            **({"unavailable": res.unavailable} if res.unavailable else {}),
        }
    fids = [c["fid"] for c in classes.values() if c["fid"] is not None]
    kids = [c["kid"]["mean"] for c in classes.values() if c["kid"] is not None]
    return {
        "classes": classes,
        "fid_mean": float(np.mean(fids)) if fids else None,
        "kid_mean": float(np.mean(kids)) if kids else None,
        "classes_scored": len(fids),
        "note": "per-class N is small: per-class FID is strongly biased upward; compare at equal N",
    }


def _memorization(
    gen_feat: torch.Tensor,
    gen_native: torch.Tensor,
    ref_feat: torch.Tensor,
    ref_images: torch.Tensor,
    *,
    bundle: DataBundle,
    data_cfg: DataConfig,
    metrics_cfg: MetricsConfig,
    choice: ExtractorChoice,
    device: torch.device,
    reporter: Reporter,
    out_dir: Path | None,
    label: str,
    pool_size: int,
) -> dict[str, Any]:
    pool = train_pool(bundle.train, pool_size)
    pool_feats = _pool_features(
        pool,
        bundle=bundle,
        data_cfg=data_cfg,
        metrics_cfg=metrics_cfg,
        choice=choice,
        device=device,
        reporter=reporter,
        label=label,
    )
    cap = min(metrics_cfg.memorization_max_train, len(pool))
    train_f = pool.subset(torch.arange(cap))
    train_feats = {k: v[:cap] for k, v in pool_feats.items()}
    cap_p = metrics_cfg.memorization_max_train_pixels
    train_p = seeded_subset(bundle.train, cap_p) if cap_p else bundle.train
    with reporter.phase(f"{label}: memorization audit", total=None):
        out = memorization_audit(
            gen_features=gen_feat,
            held_features=ref_feat,
            train_features=train_feats[choice.feature_layer],
            gen_images=gen_native,
            held_images=ref_images,
            train_images_features=train_f.images,
            train_images_pixels=train_p.images,
            train_source_index_features=train_f.source_index,
            train_source_index_pixels=train_p.source_index,
            quantile=metrics_cfg.memorization_quantile,
            out_dir=out_dir,
        )
    out["train_cap_features"] = metrics_cfg.memorization_max_train
    out["train_cap_pixels"] = cap_p
    return out


# -- entry points ------------------------------------------------------------------------
def score_run(
    *,
    run_dir: Path,
    bundle: DataBundle,
    config: RunConfig,
    reporter: Reporter | None = None,
    sampling: dict[str, Any] | None = None,
    features: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Score RUN_DIR/samples/*.png (the fixed sample set) for metrics.json.

    ``sampling`` is metrics.json's "sampling" block (sampler, NFE, images/s);
    without it, the sampler recorded in samples/manifest.json is used.
    ``features`` are the sample set's features computed this run (split across
    ranks by :func:`split_features`), in file order.
    """
    from genbench.sampling import read_sample_set

    files, manifest = read_sample_set(run_dir / "samples")
    images = load_images(files)
    if features is not None and any(len(v) != len(images) for v in features.values()):
        raise GenbenchError(f"{run_dir.name}: features do not match the {len(images)} samples")
    if sampling is None:
        sampling = dict(manifest.get("sampler") or {})
    device = resolve_device(config.train.device)
    return score_images(
        images,
        bundle=bundle,
        data_cfg=config.data,
        metrics_cfg=config.metrics,
        n_ref=config.metrics.n_ref or config.sample.n,
        choice=extractor_for(config.metrics),
        device=device,
        reporter=reporter,
        labels=_class_labels(manifest, len(images)),
        sampling=sampling,
        out_dir=run_dir,
        label=f"{config.model} s{config.seed}",
        train_pool_size=pool_size(config.metrics, config.sample.n),
        features=features,
    )


def split_features(
    images: torch.Tensor, metrics_cfg: MetricsConfig, *, device: torch.device, dist_info: DistInfo
) -> dict[str, torch.Tensor]:
    """Under torchrun, each rank extracts the features of every world-th image and
    every rank receives all of them, in image order (the same numbers as one process)."""
    choice = extractor_for(metrics_cfg)
    idx = torch.arange(dist_info.rank, len(images), dist_info.world)
    mine = extract_features(
        images[idx], choice=choice, device=device, batch_size=metrics_cfg.batch_size
    )
    parts = all_gather_objects(dist_info, (idx, mine))
    out: dict[str, torch.Tensor] = {}
    for k in choice.layers:
        dim = next(f[k].shape[1] for _, f in parts if len(f[k]))
        out[k] = torch.empty(len(images), dim)
        for i, f in parts:
            if len(i):
                out[k][i] = f[k]
    return out


def real_data_run_id(experiment: ExperimentConfig, choice: ExtractorChoice) -> str:
    key = {
        "data": experiment.data.model_dump(mode="json"),
        "n": experiment.sample.n,
        "metrics": experiment.metrics.model_dump(mode="json"),
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
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
    """The "real data" row: a seeded training subset of N images scored like a sample
    set against the same held-out reference. The floor a generator can approach.

    Writes RESULTS/<experiment>-real-n<N>-<hash>/metrics.json (model "real") and
    status.json; a folder already marked done is left alone. Returns the folder,
    or None when metrics are disabled.
    """
    cfg = experiment_cfg
    if not cfg.metrics.enabled:
        return None
    reporter = reporter or Reporter()
    choice = extractor_for(cfg.metrics)
    rd = results_dir / real_data_run_id(cfg, choice)
    status = rd / STATUS
    try:
        if status.exists() and read_json(status).get("status") == "done":
            reporter.info(f"{rd.name}: already done, skipped")
            return rd
    except ValueError:
        pass  # unreadable status: score again
    dev = resolve_device(cfg.train.device) if device is None else torch.device(device)
    rd.mkdir(parents=True, exist_ok=True)
    set_status(rd, "running")
    t0 = time.perf_counter()
    n = cfg.sample.n
    pool = train_pool(bundle.train, pool_size(cfg.metrics, n))
    feats = _pool_features(
        pool,
        bundle=bundle,
        data_cfg=cfg.data,
        metrics_cfg=cfg.metrics,
        choice=choice,
        device=dev,
        reporter=reporter,
        label="real data",
    )
    train = pool.subset(torch.arange(min(n, len(pool))))
    if len(train) < n:
        reporter.warn(f"real-data row: only {len(train)} training images for N = {n}")
    labels = train.labels if bundle.spec.condition == "classes" else None
    res = score_images(
        train.images,
        features={k: v[: len(train)] for k, v in feats.items()},
        bundle=bundle,
        data_cfg=cfg.data,
        metrics_cfg=cfg.metrics,
        n_ref=cfg.metrics.n_ref or n,
        choice=choice,
        device=dev,
        reporter=reporter,
        labels=labels,
        sampling={"sampler": "real-data", "nfe": 0},
        out_dir=rd,
        label="real data",
        audit=False,  # training images are trivially "memorized"
    )
    metrics = {
        "run_id": rd.name,
        "experiment": cfg.name,
        "model": "real",
        "seed": None,
        "sampling": {"sampler": "real-data", "nfe": 0, "n": len(train), "images_per_s": None},
        "data": {"source": cfg.data.source, "resolution": cfg.data.resolution, **bundle.split},
        "real_subset": {
            "split": bundle.split.get("train_from", "train"),
            "subset_seed": SUBSET_SEED,
            "order": "first N of a seeded permutation",
            "n": len(train),
            "subset_sha256": sha256_tensor(train.images)[:16],
        },
        **res,
        "scoring": {"seconds": round(time.perf_counter() - t0, 3)},
    }
    write_json(rd / "metrics.json", metrics)
    set_status(rd, "done")
    return rd


def score_folder(
    images_dir: Path,
    *,
    ref: str,
    inception_weights: str | Path | None = None,
    device: str = "auto",
    n_ref: int | None = None,
    out_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Score a folder of images under genbench's protocol.

    ``ref`` is an experiment (name or TOML path: its data, metrics settings and
    N_ref = sample.n) or a data source name (``genbench list``; the folder's
    resolution, N_ref = the number of images). A manifest.json with class labels
    beside the images (as genbench writes) enables per-class scores.
    """
    from genbench.config import find_experiment, load_experiment
    from genbench.data import load_data
    from genbench.data.sources import SOURCES

    reporter = reporter or Reporter()
    files = image_files(Path(images_dir))
    images = load_images(files)
    n = len(images)
    if ref in SOURCES:
        data_cfg = DataConfig(source=ref, resolution=images.shape[-1])
        metrics_cfg = MetricsConfig()
        n_ref = n_ref or n
    else:
        try:
            exp = load_experiment(str(find_experiment(ref)))
        except GenbenchError as exc:
            raise GenbenchError(
                f"--ref {ref!r} is neither a data source ({', '.join(SOURCES)}) nor an experiment: {exc}"
            ) from None
        data_cfg, metrics_cfg = exp.data, exp.metrics
        n_ref = n_ref or metrics_cfg.n_ref or exp.sample.n
        if n != exp.sample.n:
            reporter.warn(
                f"{n} images vs the experiment's sample.n = {exp.sample.n}: the protocol (and FID bias) "
                "differs, so these scores are not comparable with its runs"
            )
    bundle = load_data(data_cfg)
    manifest_path = Path(images_dir) / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    labels = _class_labels(manifest, n) if bundle.spec.condition == "classes" else None
    return score_images(
        images,
        bundle=bundle,
        data_cfg=data_cfg,
        metrics_cfg=metrics_cfg,
        n_ref=n_ref,
        choice=extractor_for(metrics_cfg, inception_weights=inception_weights),
        device=resolve_device(device),
        reporter=reporter,
        labels=labels,
        sampling=manifest.get("sampler") if isinstance(manifest.get("sampler"), dict) else None,
        out_dir=out_dir,
        label=Path(images_dir).name or "images",
    )
