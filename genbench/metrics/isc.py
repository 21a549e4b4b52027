"""Inception Score (the ``isc`` unit) from the Inception classifier's logits (shuffled
splits).

These call torch-fidelity's own metric functions, the very ones
``torch_fidelity.calculate_metrics`` runs after extracting features, with the same
defaults, so a direct ``calculate_metrics`` call on the same images and extractor gives
the same numbers."""

from __future__ import annotations

import torch
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_isc import isc_features_to_metric

from genbench.metrics.settings import FidelitySettings
from genbench.metrics.units import UnitInputs, UnitResult, finite


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


def isc_unit(x: UnitInputs) -> UnitResult:
    gen, _, choice = x.features("inception")
    logits = gen.get(choice.logits_layer) if choice.logits_layer else None
    return finite(isc_result(logits, settings=x.settings))
