"""Fréchet distance: FID in Inception space (the ``fid`` unit) and FD in DINOv2 space
(``fd_dinov2``), from extracted features.

These call torch-fidelity's own metric functions, the very ones
``torch_fidelity.calculate_metrics`` runs after extracting features, with the same
defaults, so a direct ``calculate_metrics`` call on the same images and extractor gives
the same numbers."""

from __future__ import annotations

import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from genbench.metrics.units import UnitInputs, UnitResult, dinov2_renamed, finite, space_features


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


def fid_result(fg: torch.Tensor, fr: torch.Tensor, *, low_rank: bool = False) -> UnitResult:
    """FID; rank-deficient below the feature dimension (biased upward: recorded in the
    protocol; a warning where N != N_ref, since at equal N the fingerprint already keeps
    comparisons at that N and the report leads with KID). ``low_rank`` computes it with
    :func:`fid_low_rank` there (same value, much faster)."""
    r, n, n_ref = UnitResult(), len(fg), len(fr)
    if min(n, n_ref) < 2:
        r.unavailable["fid"] = f"FID needs at least 2 images per side (N={n}, N_ref={n_ref})"
        return r
    dim = fg.shape[1]
    r.used["fid_rank_deficient"] = min(n, n_ref) <= dim
    r.scores["fid"] = fid_low_rank(fg, fr) if low_rank and min(n, n_ref) <= dim else fid(fg, fr)
    if r.used["fid_rank_deficient"] and n != n_ref:
        r.warnings.append(
            f"FID at N={n}, N_ref={n_ref} <= {dim} feature dimensions: the covariances are "
            "rank-deficient and FID is biased upward; compare FIDs only at equal N"
        )
    return r


def fid_unit(x: UnitInputs) -> UnitResult:
    return finite(fid_result(*space_features(x, "inception")))


def fd_dinov2_unit(x: UnitInputs) -> UnitResult:
    return dinov2_renamed(fid_result(*space_features(x, "dinov2")), "fid", "fd_dinov2")
