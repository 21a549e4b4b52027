"""Metrics and audits as registered units: the inputs every unit reads
(:class:`UnitInputs`), and the registry (:mod:`genbench.metric_registry`) re-exported.

A unit is one function over what a scoring call computes once: the samples' and the
reference's features in each feature space, the sample images, their intended labels
and the held-out and training images (:class:`UnitInputs`), returning a
:class:`UnitResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from genbench.metric_registry import (
    SPACES,
    Column,
    MetricChoice,
    MetricUnit,
    UnitResult,
    columns,
    metric_units,
    nameable,
    register_metric,
    selected,
    snapshot_nameable,
    unit,
)

if TYPE_CHECKING:
    import torch

    from genbench.config import DataConfig, MetricsConfig
    from genbench.data import DataBundle
    from genbench.metrics.heldout import HeldoutParts
    from genbench.metrics.inception import ExtractorChoice
    from genbench.metrics.settings import FidelitySettings

__all__ = [
    "SPACES",
    "Column",
    "MetricChoice",
    "MetricUnit",
    "UnitInputs",
    "UnitResult",
    "columns",
    "dinov2_renamed",
    "finite",
    "metric_units",
    "nameable",
    "register_metric",
    "selected",
    "snapshot_nameable",
    "space_features",
    "unit",
]


@dataclass
class UnitInputs:
    """What one scoring call computed once and every unit reads."""

    images: torch.Tensor  # uint8 N x C x H x W in the data's channel count
    labels: torch.Tensor | None  # intended class of each image (class-conditional sets)
    gen: dict[str, dict[str, torch.Tensor]]  # space -> layer -> N x D features
    ref: dict[str, dict[str, torch.Tensor]]  # space -> layer -> N_ref x D features
    extractors: dict[str, ExtractorChoice]  # the spaces available in this call
    parts: HeldoutParts  # reference, real-data row, audit calibration and check images
    bundle: DataBundle  # the training split (the copy audit's pool) and the data spec
    data_cfg: DataConfig
    metrics_cfg: MetricsConfig
    settings: FidelitySettings
    device: torch.device
    keep_files: bool = False  # the caller keeps the units' files (UnitResult.files)
    # When the scored images are held-out images themselves (the real-data row): their
    # positions in the held-out split, so the copy audit does not match them to themselves.
    heldout_positions: torch.Tensor | None = None

    def features(self, space: str) -> tuple[dict[str, Any], dict[str, Any], ExtractorChoice]:
        """(samples' features, reference features, extractor) of one space."""
        return self.gen[space], self.ref[space], self.extractors[space]


# -- helpers of the built-in units -----------------------------------------------------
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


def space_features(x: UnitInputs, space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples', reference) features of a space's extractor layer."""
    gen, ref, choice = x.features(space)
    return gen[choice.feature_layer], ref[choice.feature_layer]


def dinov2_renamed(r: UnitResult, old: str, new: str) -> UnitResult:
    """A second feature space's score under its own column (its warnings say which space)."""
    if old in r.scores:
        r.scores[new] = r.scores.pop(old)
    if old in r.unavailable:
        r.unavailable[new] = r.unavailable.pop(old)
    r.used = {f"{k}_dinov2": v for k, v in r.used.items()}
    r.warnings = [f"DINOv2 space: {w}" for w in r.warnings]
    return finite(r)
