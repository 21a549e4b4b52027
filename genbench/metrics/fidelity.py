"""FID, KID, precision/recall and Inception Score from extracted features.

These call torch-fidelity's own metric functions, the very ones
``torch_fidelity.calculate_metrics`` runs after extracting features, with the
same defaults (rng seed 2020, shuffled IS splits, polynomial KID kernel), so a
direct ``calculate_metrics`` call on the same images and extractor gives the
same numbers. Working from features lets per-class scores and the memorization
audit reuse one (slow) Inception pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from genbench.metrics.settings import FidelitySettings
from genbench.metrics.units import UnitInputs, UnitResult


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


def fid_result(fg: torch.Tensor, fr: torch.Tensor, *, low_rank: bool = False) -> UnitResult:
    """FID; rank-deficient below the feature dimension (biased upward, said in a warning).
    ``low_rank`` computes it with :func:`fid_low_rank` there (same value, much faster)."""
    r, n, n_ref = UnitResult(), len(fg), len(fr)
    if min(n, n_ref) < 2:
        r.unavailable["fid"] = f"FID needs at least 2 images per side (N={n}, N_ref={n_ref})"
        return r
    dim = fg.shape[1]
    r.used["fid_rank_deficient"] = min(n, n_ref) <= dim
    r.scores["fid"] = fid_low_rank(fg, fr) if low_rank and min(n, n_ref) <= dim else fid(fg, fr)
    if r.used["fid_rank_deficient"]:
        r.warnings.append(
            f"FID at N={n}, N_ref={n_ref} <= {dim} feature dimensions: the covariances are "
            "rank-deficient and FID is biased upward; compare FIDs only at equal N"
        )
    return r


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


def prc_result(fg: torch.Tensor, fr: torch.Tensor, *, settings: FidelitySettings) -> UnitResult:
    """Precision, recall and their F-score; needs more than k images per side."""
    r, k = UnitResult(), settings.prc_neighborhood
    if min(len(fg), len(fr)) <= k:
        r.unavailable["precision"] = r.unavailable["recall"] = (
            f"precision/recall need more than {k} images per side (N={len(fg)}, N_ref={len(fr)})"
        )
        return r
    out = prc_features_to_metric(
        fg, fr, prc_neighborhood=k, prc_batch_size=DEFAULTS["prc_batch_size"], verbose=False
    )
    r.scores.update({k: float(out[k]) for k in ("precision", "recall", "f_score")})
    return r


def isc_result(logits: torch.Tensor | None, *, settings: FidelitySettings) -> UnitResult:
    """Inception Score over min(isc_splits, N) splits of the classifier logits."""
    r = UnitResult()
    if logits is None:
        r.unavailable["isc"] = (
            "the Inception Score needs the Inception classifier layer, which the offline "
            "weights lack (use the official weights: see `genbench doctor`)"
        )
    elif len(logits) < 2:
        r.unavailable["isc"] = f"the Inception Score needs at least 2 images (N={len(logits)})"
    else:
        splits = min(settings.isc_splits, len(logits))
        out = isc_features_to_metric(logits, splits, DEFAULTS["samples_shuffle"], settings.rng_seed)
        r.scores["isc"] = {"mean": out["inception_score_mean"], "std": out["inception_score_std"]}
        r.used["isc_splits"] = splits
    return r


def finite(r: UnitResult) -> UnitResult:
    """A non-finite score becomes unavailable, with why; unavailable scores read None."""
    for k, v in list(r.scores.items()):
        vals = v.values() if isinstance(v, dict) else [v]
        if not all(np.isfinite(x) for x in vals):
            r.unavailable[k] = f"{k} is not finite ({v}); the features may be degenerate"
            del r.scores[k]
    for k in r.unavailable:
        r.scores.setdefault(k, None)
    return r


def fidelity_from_features(
    gen: dict[str, torch.Tensor],
    ref: dict[str, torch.Tensor],
    *,
    names: list[str] | tuple[str, ...],
    feature_layer: str,
    logits_layer: str | None,
    settings: FidelitySettings | None = None,
    low_rank_fid: bool = False,
) -> UnitResult:
    """FID, KID, precision/recall and IS (those in ``names``) of features ``gen``
    against ``ref``, outside a scoring call (per-class scores, ``genbench bench``).
    Small N is guarded, not crashed on: see each ``*_result`` function."""
    settings = settings or FidelitySettings()
    fg, fr = gen[feature_layer], ref[feature_layer]
    r = UnitResult()
    if "fid" in names:
        r.merge(fid_result(fg, fr, low_rank=low_rank_fid))
    if "kid" in names:
        r.merge(kid_result(fg, fr, settings=settings))
    if "prc" in names:
        r.merge(prc_result(fg, fr, settings=settings))
    if "isc" in names:
        r.merge(isc_result(gen.get(logits_layer) if logits_layer else None, settings=settings))
    return finite(r)


# -- the registered units (see genbench.metrics.units) -----------------------------------
def _layer(x: UnitInputs, space: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen, ref, choice = x.features(space)
    return gen[choice.feature_layer], ref[choice.feature_layer]


def fid_unit(x: UnitInputs) -> UnitResult:
    return finite(fid_result(*_layer(x, "inception")))


def kid_unit(x: UnitInputs) -> UnitResult:
    return finite(kid_result(*_layer(x, "inception"), settings=x.settings))


def prc_unit(x: UnitInputs) -> UnitResult:
    return finite(prc_result(*_layer(x, "inception"), settings=x.settings))


def isc_unit(x: UnitInputs) -> UnitResult:
    gen, _, choice = x.features("inception")
    logits = gen.get(choice.logits_layer) if choice.logits_layer else None
    return finite(isc_result(logits, settings=x.settings))


def _renamed(r: UnitResult, old: str, new: str) -> UnitResult:
    """A second feature space's score under its own column (its warnings say which space)."""
    if old in r.scores:
        r.scores[new] = r.scores.pop(old)
    if old in r.unavailable:
        r.unavailable[new] = r.unavailable.pop(old)
    r.used = {f"{k}_dinov2": v for k, v in r.used.items()}
    r.warnings = [f"DINOv2 space: {w}" for w in r.warnings]
    return finite(r)


def fd_dinov2_unit(x: UnitInputs) -> UnitResult:
    return _renamed(fid_result(*_layer(x, "dinov2")), "fid", "fd_dinov2")


def kid_dinov2_unit(x: UnitInputs) -> UnitResult:
    return _renamed(kid_result(*_layer(x, "dinov2"), settings=x.settings), "kid", "kid_dinov2")
