"""Precision and recall of k-NN manifolds in Inception space (the ``prc`` unit).

These call torch-fidelity's own metric functions, the very ones
``torch_fidelity.calculate_metrics`` runs after extracting features, with the same
defaults, so a direct ``calculate_metrics`` call on the same images and extractor gives
the same numbers."""

from __future__ import annotations

import torch
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_prc import prc_features_to_metric

from genbench.metrics.settings import FidelitySettings
from genbench.metrics.units import UnitInputs, UnitResult, finite, space_features


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


def prc_unit(x: UnitInputs) -> UnitResult:
    return finite(prc_result(*space_features(x, "inception"), settings=x.settings))
