"""FID, KID, precision/recall and Inception Score from extracted features.

These call torch-fidelity's own metric functions, the very ones
``torch_fidelity.calculate_metrics`` runs after extracting features, with the
same defaults (rng seed 2020, shuffled IS splits, polynomial KID kernel), so a
direct ``calculate_metrics`` call on the same images and extractor gives the
same numbers. Working from features lets per-class scores and the memorization
audit reuse one (slow) Inception pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

METRIC_NAMES = ("fid", "kid", "prc", "isc")


@dataclass(frozen=True)
class FidelitySettings:
    """Metric parameters; torch-fidelity's defaults unless a config says otherwise."""

    kid_subsets: int = DEFAULTS["kid_subsets"]
    kid_subset_size: int = DEFAULTS["kid_subset_size"]  # upper bound; min(this, N, N_ref) is used
    isc_splits: int = DEFAULTS["isc_splits"]
    prc_neighborhood: int = DEFAULTS["prc_neighborhood"]
    rng_seed: int = DEFAULTS["rng_seed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid_subsets": self.kid_subsets,
            "kid_subset_size_max": self.kid_subset_size,
            "isc_splits_max": self.isc_splits,
            "prc_neighborhood": self.prc_neighborhood,
            "rng_seed": self.rng_seed,
            "kid_kernel": "poly",
            "kid_kernel_poly_degree": DEFAULTS["kid_kernel_poly_degree"],
            "kid_kernel_poly_coef0": DEFAULTS["kid_kernel_poly_coef0"],
            "isc_shuffle": DEFAULTS["samples_shuffle"],
        }


@dataclass
class FidelityResult:
    scores: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    used: dict[str, Any] = field(
        default_factory=dict
    )  # settings as actually applied (e.g. KID subset size)


def fid(gen: torch.Tensor, ref: torch.Tensor) -> float:
    """FID between two feature sets (torch-fidelity: real part of sqrt(eigvals(S1 S2)), so never complex)."""
    s1 = fid_features_to_statistics(gen.float().cpu())
    s2 = fid_features_to_statistics(ref.float().cpu())
    return float(fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"])


def fid_low_rank(gen: torch.Tensor, ref: torch.Tensor) -> float:
    """The same FID, exactly, via the sample matrices: with centred features A (n1 x d)
    and B (n2 x d), the non-zero eigenvalues of S1 S2 are the squared singular values
    of A B^T / sqrt((n1-1)(n2-1)), so tr sqrtm(S1 S2) is their sum. An n1 x n2 SVD
    instead of a d x d eigendecomposition: used for per-class FID (a few hundred
    images per class, d = 2048), where it is orders of magnitude faster."""
    a, b = gen.double().cpu(), ref.double().cpu()
    n1, n2 = len(a), len(b)
    mu1, mu2 = a.mean(0), b.mean(0)
    ac, bc = a - mu1, b - mu2
    tr1 = (ac * ac).sum() / (n1 - 1)
    tr2 = (bc * bc).sum() / (n2 - 1)
    tr_covmean = torch.linalg.svdvals(ac @ bc.T).sum() / ((n1 - 1) * (n2 - 1)) ** 0.5
    return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2 * tr_covmean)


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


def fidelity_from_features(
    gen: dict[str, torch.Tensor],
    ref: dict[str, torch.Tensor],
    *,
    names: list[str] | tuple[str, ...],
    feature_layer: str,
    logits_layer: str | None,
    settings: FidelitySettings | None = None,
    low_rank_fid: bool = False,
) -> FidelityResult:
    """Scores for generated features ``gen`` against real features ``ref``.

    Small N is guarded, not crashed on: FID needs N >= 2 on both sides (and is
    rank-deficient, so biased upward, below 2048); KID's subset size is
    min(kid_subset_size, N, N_ref) and needs >= 2; precision/recall need more
    than ``prc_neighborhood`` images per side; IS uses min(isc_splits, N) splits
    and needs the classifier logits. ``low_rank_fid`` computes FID with
    :func:`fid_low_rank` when N or N_ref is at most the feature dimension (same
    value, much faster; used for per-class FID).
    """
    settings = settings or FidelitySettings()
    r = FidelityResult()
    fg, fr = gen[feature_layer], ref[feature_layer]
    n, n_ref = len(fg), len(fr)
    if "fid" in names:
        if min(n, n_ref) < 2:
            r.unavailable["fid"] = f"FID needs at least 2 images per side (N={n}, N_ref={n_ref})"
        else:
            dim = fg.shape[1]
            use_low_rank = low_rank_fid and min(n, n_ref) <= dim
            r.scores["fid"] = fid_low_rank(fg, fr) if use_low_rank else fid(fg, fr)
            r.used["fid_rank_deficient"] = min(n, n_ref) <= dim
            if r.used["fid_rank_deficient"]:
                r.warnings.append(
                    f"FID at N={n}, N_ref={n_ref} <= {dim} feature dimensions: the covariances are "
                    "rank-deficient and FID is biased upward; compare FIDs only at equal N"
                )
    if "kid" in names:
        if min(n, n_ref) < 2:
            r.unavailable["kid"] = f"KID needs at least 2 images per side (N={n}, N_ref={n_ref})"
        else:
            r.scores["kid"], r.used["kid_subset_size"] = kid(fg, fr, settings=settings)
            if r.used["kid_subset_size"] == min(n, n_ref) and n == n_ref:
                r.warnings.append(
                    f"KID subset size = N = {n}: every subset holds all images, so the KID std "
                    "is ~0 and says nothing about spread (compare seeds instead)"
                )
    if "prc" in names:
        k = settings.prc_neighborhood
        if min(n, n_ref) <= k:
            r.unavailable["precision"] = r.unavailable["recall"] = (
                f"precision/recall need more than {k} images per side (N={n}, N_ref={n_ref})"
            )
        else:
            out = prc_features_to_metric(
                fg, fr, prc_neighborhood=k, prc_batch_size=DEFAULTS["prc_batch_size"], verbose=False
            )
            r.scores["precision"] = float(out["precision"])
            r.scores["recall"] = float(out["recall"])
            r.scores["f_score"] = float(out["f_score"])
    if "isc" in names:
        if logits_layer is None or logits_layer not in gen:
            r.unavailable["isc"] = (
                "the Inception Score needs the Inception classifier layer, which the offline "
                "weights lack (use the official weights: see `genbench doctor`)"
            )
        elif n < 2:
            r.unavailable["isc"] = f"the Inception Score needs at least 2 images (N={n})"
        else:
            splits = min(settings.isc_splits, n)
            out = isc_features_to_metric(
                gen[logits_layer], splits, DEFAULTS["samples_shuffle"], settings.rng_seed
            )
            r.scores["isc"] = {
                "mean": out["inception_score_mean"],
                "std": out["inception_score_std"],
            }
            r.used["isc_splits"] = splits
    for k, v in list(r.scores.items()):
        vals = v.values() if isinstance(v, dict) else [v]
        if not all(np.isfinite(x) for x in vals):
            r.unavailable[k] = f"{k} is not finite ({v}); the features may be degenerate"
            del r.scores[k]
    for k in r.unavailable:
        r.scores.setdefault(k, None)
    return r
