"""Metrics and audits as registered units: the inputs every unit reads
(:class:`UnitInputs`), and the registry (:mod:`genbench.metrics.registry`) re-exported.

A unit is one function over what a scoring call computes once: the samples' and the
reference's features in each feature space, the sample images, their intended labels
and the held-out and training images (:class:`UnitInputs`), returning a
:class:`UnitResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genbench.metrics.registry import (
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
    "metric_units",
    "nameable",
    "register_metric",
    "selected",
    "snapshot_nameable",
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
    out_dir: Path | None = None  # where units write their files (copies.json, ...)

    def features(self, space: str) -> tuple[dict[str, Any], dict[str, Any], ExtractorChoice]:
        """(samples' features, reference features, extractor) of one space."""
        return self.gen[space], self.ref[space], self.extractors[space]
