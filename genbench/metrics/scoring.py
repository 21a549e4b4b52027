"""Scoring a set of images against the held-out split of the data, under one
recorded protocol: the core every caller goes through (a run's samples, the real-data
row in :mod:`genbench.runs.real`, a folder of images in :mod:`genbench.metrics.folder`,
snapshots during training), and the cut of the held-out split it scores against."""

from __future__ import annotations

import itertools
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch_fidelity

import genbench.metrics.dinov2 as dinov2
import genbench.metrics.units as units
from genbench.config import DataConfig, MetricsConfig
from genbench.data import DataBundle, ImageSet
from genbench.data.transforms import set_channels
from genbench.metrics.cache import sha256_tensor
from genbench.metrics.features import (
    DTYPES,
    cached_features,
    extract_features,
    feature_precision,
)
from genbench.metrics.heldout import HeldoutParts
from genbench.metrics.inception import ExtractorChoice, choose_extractor
from genbench.metrics.protocol import SUBSET_SEED, fingerprint, split_description
from genbench.metrics.settings import FidelitySettings
from genbench.utils.device import inference_channels_last
from genbench.utils.distributed import DistInfo, all_gather_objects
from genbench.utils.errors import GenbenchError
from genbench.utils.files import write_files
from genbench.utils.progress import Reporter, progress_to


# -- inputs ------------------------------------------------------------------------
def seeded_subset(images: ImageSet, n: int, *, seed: int = SUBSET_SEED) -> ImageSet:
    """The first n of a seeded permutation (all of them if n >= len), in source order."""
    if n >= len(images):
        return images
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images.subset(idx.sort().values)


def heldout_parts(
    holdout: ImageSet, *, n_ref: int, n: int, n_fresh: int = 0, seed: int = SUBSET_SEED
) -> HeldoutParts:
    """One seeded permutation of the held-out split, cut in order: reference (n_ref,
    the same images as :func:`seeded_subset`), real-data row (n), calibration and check
    (n each, and up to ``n_fresh`` each where the split holds them: the copy audit's
    thresholds and false-positive rate are then measured on more images). A short split
    shrinks the later parts, never the reference."""
    perm = torch.randperm(len(holdout), generator=torch.Generator().manual_seed(seed))
    notes: list[str] = []
    ref_idx = perm[:n_ref]
    rest = perm[n_ref:]
    want = 3 * n
    if len(rest) < want:
        k = len(rest) // 3
        notes.append(
            f"held-out split too small for 3 x {n} audit images after the reference: "
            f"real-data row, calibration and check sets get {k} each"
        )
        n = k
    fresh = max(n, min(n_fresh, (len(rest) - n) // 2))
    bounds = (0, n, n + fresh, n + 2 * fresh)
    parts = [rest[a:b] for a, b in itertools.pairwise(bounds)]

    def take(idx: torch.Tensor) -> ImageSet:
        return holdout.subset(idx.sort().values)

    names = ("reference", "real", "calibration", "check")
    positions = {k: v.sort().values for k, v in zip(names, [ref_idx, *parts], strict=True)}
    return HeldoutParts(
        take(ref_idx), take(parts[0]), take(parts[1]), take(parts[2]), notes, positions
    )


def scoring_parts(
    bundle: DataBundle, metrics_cfg: MetricsConfig, *, n: int
) -> tuple[HeldoutParts, str]:
    """The held-out cut every scoring call of an experiment shares (the real-data row's
    and the samples' alike, so their parts are the same images), and where the FID/KID
    reference comes from. With ``reference = "train"`` the held-out split is cut as if the
    reference were empty and the reference is the training split's seeded subset: the
    real-data row and the audit's fresh sets stay disjoint under either choice."""
    n_ref = metrics_cfg.n_ref or n
    fresh = metrics_cfg.copy_fresh if metrics_cfg.memorization else 0
    if metrics_cfg.reference == "train":
        parts = heldout_parts(bundle.holdout, n_ref=0, n=n, n_fresh=fresh)
        parts.reference = seeded_subset(bundle.full_train(), n_ref)  # same at any train_subset
        return parts, "train"
    return heldout_parts(bundle.holdout, n_ref=n_ref, n=n, n_fresh=fresh), "holdout"


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


def class_labels(manifest: dict[str, Any], n: int) -> torch.Tensor | None:
    """Intended integer class labels of a conditional sample set, if it has them."""
    labels = manifest.get("labels")
    if manifest.get("condition") != "classes" or not isinstance(labels, list) or len(labels) != n:
        return None
    if not all(isinstance(x, int) for x in labels):
        return None  # class mixtures: no single intended class
    return torch.tensor(labels, dtype=torch.long)


# -- the core -----------------------------------------------------------------------
@dataclass
class _Job:
    """What one scoring call works on: the images, each feature space's features and
    the held-out parts."""

    images: torch.Tensor  # uint8, as given
    native: torch.Tensor  # uint8 in the data's channel count (pixel-space audits)
    parts: HeldoutParts
    missing: dict[str, str]  # feature spaces asked for but unavailable, with why
    feature_seconds: float | None  # the samples' Inception pass (the protocol's figure)
    notes: list[str]
    ref_part: str = "holdout"  # where the FID/KID reference comes from: holdout or train


@dataclass
class ScoredSet:
    """One scoring call's result: ``record``, metrics.json's scoring sections (see
    :func:`score_images`), and ``files``, the units' files when asked for (copies.json,
    copies.png, bootstrap.json: a dict for JSON, a uint8 image for PNG). Scoring writes
    nothing; whoever owns the folder writes the files."""

    record: dict[str, Any]
    files: dict[str, Any]


@dataclass(frozen=True)
class ScoringSetup:
    """What every set scored in one context shares: the data scored against (``bundle``,
    ``data_cfg``), what to compute and how (``metrics_cfg``: the units, the reference, the
    bootstrap, the audit's settings), the reference size ``n_ref``, the extractor, the
    device and where progress goes."""

    bundle: DataBundle
    data_cfg: DataConfig
    metrics_cfg: MetricsConfig
    n_ref: int
    choice: ExtractorChoice
    device: torch.device
    reporter: Reporter | None = None


def score_images(
    images: torch.Tensor,
    setup: ScoringSetup,
    *,
    labels: torch.Tensor | None = None,
    sampling: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    label: str = "samples",
    features: dict[str, torch.Tensor] | None = None,
    heldout_positions: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Score uint8 images against a seeded subset of ``setup.n_ref`` held-out images.

    Runs every metric unit ``setup.metrics_cfg`` selects (:mod:`genbench.metrics.units`)
    over features extracted once per feature space. Returns ``scores`` (fid, kid {mean,
    std}, precision, recall, f_score, isc {mean, std}, per-class means, class consistency,
    the copy rate, DINOv2 scores, as selected; a score that cannot be computed is None with
    its reason in ``scores_unavailable``), ``protocol`` (with its ``fingerprint``), the
    units' blocks (``per_class``, ``class_consistency``, ``copies``, ``bootstrap``) and
    ``warnings``. ``labels``: the intended classes of a conditional set; ``sampling``: the
    sampler and NFE for the protocol; ``features``: the images' Inception features when
    already known (gathered from several ranks; generated features are never cached);
    ``heldout_positions``: held-out images that are the set itself (the real-data row), which
    the audit must not match to themselves. ``out_dir`` receives the units' files
    (copies.json, copies.png, bootstrap.json); :func:`score_set` returns them.
    """
    scored = score_set(
        images,
        setup,
        labels=labels,
        sampling=sampling,
        keep_files=out_dir is not None,
        label=label,
        features=features,
        heldout_positions=heldout_positions,
    )
    if out_dir is not None:
        write_files(out_dir, scored.files)
    return scored.record


def score_set(
    images: torch.Tensor,
    setup: ScoringSetup,
    *,
    labels: torch.Tensor | None = None,
    sampling: dict[str, Any] | None = None,
    keep_files: bool = False,
    label: str = "samples",
    features: dict[str, torch.Tensor] | None = None,
    heldout_positions: torch.Tensor | None = None,
) -> ScoredSet:
    """:func:`score_images`, writing nothing: the units' files come back in memory
    (``keep_files``) for the caller to write."""
    bundle, metrics_cfg, choice = setup.bundle, setup.metrics_cfg, setup.choice
    reporter = setup.reporter or Reporter()
    job = _prepare(
        images,
        bundle=bundle,
        metrics_cfg=metrics_cfg,
        n_ref=setup.n_ref,
        reporter=reporter,
        label=label,
    )
    x = units.UnitInputs(
        images=job.native,
        labels=labels,
        gen={},  # filled by _features, as is ref
        ref={},
        extractors={"inception": choice},
        parts=job.parts,
        bundle=bundle,
        data_cfg=setup.data_cfg,
        metrics_cfg=metrics_cfg,
        settings=settings_from(metrics_cfg),
        device=setup.device,
        keep_files=keep_files,
        heldout_positions=heldout_positions,
    )
    selected = units.selected(metrics_cfg)
    _features(job, x, selected, reporter=reporter, label=label, features=features)
    # Each unit in turn, called from here (no frame between a run and its metric function);
    # one whose feature space is unavailable gets None and the reason.
    res = units.UnitResult()
    for unit in selected:
        if unit.space in job.missing:
            res.merge(_unavailable(unit, job.missing[unit.space]))
            continue
        with _phase(reporter, label, unit) as tick, progress_to(tick):
            res.merge(unit.function()(x))
    for w in res.warnings:
        job.notes.append(w)
        reporter.warn(f"{label}: {w}")
    protocol = _protocol(job, x, choice=choice, sampling=sampling, used=res.used)
    record = {
        "scores": res.scores,
        "scores_unavailable": res.unavailable,
        "protocol": protocol,
        **res.blocks,
        "warnings": job.notes,
    }
    return ScoredSet(record, res.files)


def _unavailable(unit: units.MetricUnit, why: str) -> units.UnitResult:
    return units.UnitResult(
        scores={c.key: None for c in unit.columns}, unavailable={c.key: why for c in unit.columns}
    )


def _phase(reporter: Reporter, label: str, unit: units.MetricUnit) -> AbstractContextManager[Any]:
    """A progress phase while a slow unit runs (``MetricUnit.progress``)."""
    if not unit.progress:
        return nullcontext()
    return reporter.phase(f"{label}: {unit.progress}", total=None)


def _prepare(
    images: torch.Tensor,
    *,
    bundle: DataBundle,
    metrics_cfg: MetricsConfig,
    n_ref: int,
    reporter: Reporter,
    label: str,
) -> _Job:
    """Check the images and cut the held-out split (and with ``reference = "train"``,
    take the reference from the training split instead)."""
    spec = bundle.spec
    reference = metrics_cfg.reference
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
    source, pool = (
        ("train", bundle.full_train()) if reference == "train" else ("holdout", bundle.holdout)
    )
    if n_ref > len(pool):
        warn(f"only {len(pool)} {source} images; N_ref = {len(pool)} instead of {n_ref}")
    cfg = metrics_cfg.model_copy(update={"n_ref": n_ref, "reference": reference})
    parts, _ = scoring_parts(bundle, cfg, n=n)
    for note in parts.notes:
        warn(note)
    if n != len(parts.reference):
        warn(f"N = {n} generated vs N_ref = {len(parts.reference)} reference images")
    native = set_channels(images, spec.channels) if images.shape[1] != spec.channels else images
    return _Job(images, native, parts, {}, None, notes, source)


def _features(
    job: _Job,
    x: units.UnitInputs,
    selected: tuple[units.MetricUnit, ...],
    *,
    reporter: Reporter,
    label: str,
    features: dict[str, torch.Tensor] | None,
) -> None:
    """Both sides' features in every feature space a selected unit reads (Inception
    always: it is the protocol's), each extracted once; reference features are cached."""
    spaces = ["inception"] + [s for s in units.SPACES[1:] if any(u.space == s for u in selected)]
    if "dinov2" in spaces:
        try:
            x.extractors["dinov2"] = dinov2.choose(download=x.metrics_cfg.download_weights)
        except GenbenchError as exc:
            job.missing["dinov2"] = str(exc)
            reporter.warn(f"{label}: {exc}")
    ref = job.parts.reference
    for space in spaces:
        if space not in x.extractors:
            continue
        ext = x.extractors[space]
        tag = "" if space == "inception" else f" ({space})"
        precision = x.metrics_cfg.precision if space == "inception" else "fp32"
        with reporter.phase(f"{label}: reference features{tag}", total=len(ref)) as tick:
            x.ref[space], hit = cached_features(
                ref.images,
                choice=ext,
                device=x.device,
                describe=split_description(x.data_cfg, x.bundle, job.ref_part),
                batch_size=x.metrics_cfg.extractor_batch(x.device),
                on_batch=lambda m, tick=tick: tick(advance=m),
                precision=precision,
            )
            if hit:
                tick(len(ref), len(ref))
        if space == "inception" and features is not None:
            x.gen[space] = features
            continue
        t0 = time.perf_counter()
        with reporter.phase(f"{label}: features{tag}", total=len(job.images)) as tick:
            x.gen[space] = extract_features(
                job.images,
                choice=ext,
                device=x.device,
                batch_size=x.metrics_cfg.extractor_batch(x.device),
                on_batch=lambda m, tick=tick: tick(advance=m),
                precision=precision,
            )
        if space == "inception":
            job.feature_seconds = time.perf_counter() - t0


def _protocol(
    job: _Job,
    x: units.UnitInputs,
    *,
    choice: ExtractorChoice,
    sampling: dict[str, Any] | None,
    used: dict[str, Any],
) -> dict[str, Any]:
    bundle, data_cfg, metrics_cfg, device = x.bundle, x.data_cfg, x.metrics_cfg, x.device
    spec, n, ref = bundle.spec, len(job.images), job.parts.reference
    seconds = job.feature_seconds
    computes_in = feature_precision(device, metrics_cfg.precision)
    protocol: dict[str, Any] = {
        "torch_fidelity": torch_fidelity.__version__,
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
        "weights_source": choice.source,
        "extractor_reason": choice.reason,
        "feature_layer": choice.feature_layer,
        "dtype": DTYPES[computes_in],  # in the fingerprint: bf16 features are another protocol
        "n_generated": n,
        "n_reference": len(ref),
        "reference": {
            **split_description(data_cfg, bundle, job.ref_part),
            "subset_sha256": sha256_tensor(ref.images)[:16],
        },
        "resolution": spec.resolution,
        "channels": spec.channels,
        "channel_handling": (
            "grayscale replicated to RGB for the extractor" if spec.channels == 1 else "RGB"
        )
        + (
            f"; images had {job.images.shape[1]} channels"
            if job.images.shape[1] != spec.channels
            else ""
        ),
        "settings": {**settings_from(metrics_cfg).to_dict(), **used},
        "sampling": dict(sampling or {}),
        # data.train_subset describes the model, not the measurement: not in the fingerprint
        **(
            {
                "train_subset": {
                    k: bundle.split[k]
                    for k in ("train_subset", "train_subset_part", "n_unseen")
                    if k in bundle.split
                }
            }
            if "train_subset" in bundle.split
            else {}
        ),
        "extract_seconds": round(seconds, 2) if seconds else None,
        "extract_images_per_s": round(n / seconds, 2) if seconds else None,
        "device": str(device),
        # How the extractor ran (same function up to float rounding; not in the fingerprint).
        "inference": ("fp32" if computes_in == "fp32" else "bf16 autocast")
        + ", batch norm folded into convolutions, "
        + ("channels_last" if inference_channels_last(device) else "NCHW"),
    }
    spaces = {
        space: {"extractor": e.name, "weights_sha256": e.weights_sha256, "source": e.source}
        for space, e in x.extractors.items()
        if space != "inception"
    }
    spaces.update({space: {"unavailable": why} for space, why in job.missing.items()})
    if spaces:  # only where a second space was asked for: other fingerprints stay as they were
        protocol["feature_spaces"] = spaces
    protocol["fingerprint"] = fingerprint(protocol)
    if choice.notes:
        protocol["notes"] = list(choice.notes)
    return protocol


# -- torchrun -----------------------------------------------------------------------------
def split_features(
    images: torch.Tensor,
    metrics_cfg: MetricsConfig,
    *,
    choice: ExtractorChoice,
    device: torch.device,
    dist_info: DistInfo,
) -> dict[str, torch.Tensor]:
    """Under torchrun, each rank extracts the features of every world-th image and
    every rank receives all of them, in image order (the same numbers as one process)."""
    idx = torch.arange(dist_info.rank, len(images), dist_info.world)
    mine = extract_features(
        images[idx],
        choice=choice,
        device=device,
        batch_size=metrics_cfg.extractor_batch(device),
        precision=metrics_cfg.precision,
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
