"""Kernel Inception distance: KID in Inception space (the ``kid`` unit) and in DINOv2
space (``kid_dinov2``), from extracted features (rng seed 2020, polynomial kernel).

These call torch-fidelity's own metric functions, the very ones
``torch_fidelity.calculate_metrics`` runs after extracting features, with the same
defaults, so a direct ``calculate_metrics`` call on the same images and extractor gives
the same numbers."""

from __future__ import annotations

import torch
from torch_fidelity.metric_kid import kid_features_to_metric

from genbench.metrics.settings import FidelitySettings
from genbench.metrics.units import UnitInputs, UnitResult, dinov2_renamed, finite, space_features


def kid(
    gen: torch.Tensor, ref: torch.Tensor, *, settings: FidelitySettings
) -> tuple[dict[str, float], int]:
    size = min(settings.kid_subset_size, len(gen), len(ref))
    out = kid_features_to_metric(
        gen,
        ref,
        kid_subsets=settings.kid_subsets,
        kid_subset_size=size,
        rng_seed=settings.rng_seed,
        verbose=False,
    )
    return {
        "mean": out["kernel_inception_distance_mean"],
        "std": out["kernel_inception_distance_std"],
    }, size


def kid_result(fg: torch.Tensor, fr: torch.Tensor, *, settings: FidelitySettings) -> UnitResult:
    """KID with subset size min(kid_subset_size, N, N_ref)."""
    r, n, n_ref = UnitResult(), len(fg), len(fr)
    if min(n, n_ref) < 2:
        r.unavailable["kid"] = f"KID needs at least 2 images per side (N={n}, N_ref={n_ref})"
        return r
    r.scores["kid"], r.used["kid_subset_size"] = kid(fg, fr, settings=settings)
    if r.used["kid_subset_size"] == min(n, n_ref) and n == n_ref:
        r.warnings.append(
            f"KID subset size = N = {n}: every subset holds all images, so the KID std "
            "is ~0 and says nothing about spread (compare seeds instead)"
        )
    return r


def kid_unit(x: UnitInputs) -> UnitResult:
    return finite(kid_result(*space_features(x, "inception"), settings=x.settings))


def kid_dinov2_unit(x: UnitInputs) -> UnitResult:
    return dinov2_renamed(
        kid_result(*space_features(x, "dinov2"), settings=x.settings), "kid", "kid_dinov2"
    )
