"""The copy audit's settings, its per-sample statistics and the definition metrics.json
records with every verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import genbench.metrics.audit.descriptor as descriptor
import genbench.metrics.audit.ncc as ncc

#: Bump when a statistic or the verdict changes: cached statistics are keyed by it.
VERSION = 5  # 5: k-image blends from every two-image start; 4: mosaics, membership, copied fraction
STATS = ("desc_d", "desc_ratio", "ncc_d", "ncc_ratio", "half_d", "piece_d", "blend_d", "blendk_d")
STAGE = {
    "desc_d": "descriptor",
    "desc_ratio": "descriptor",
    "ncc_d": "pixel",
    "ncc_ratio": "pixel",
    "half_d": "mosaic",
    "piece_d": "mosaic",
    "blend_d": "blend",
    "blendk_d": "blend",
}
#: The run-level estimators of the copied fraction (each a test against the tolerance).
ESTIMATORS = ("per-sample", "membership (descriptor)", "membership (pixels)")
DEFINITION = (
    "a sample is a copy when, against a pool of every real image (training split, "
    "validation slice, held-out split), its learned-descriptor distance, its pixel NCC "
    "distance (flips, quarter turns, shifts up to max_shift px, intensity changes), the "
    "ratio of either to the second-best match, its best half-image or multi-piece mosaic "
    "match, or its best blend fit of two or of up to four images falls below the alpha/8 "
    "quantile of the same statistic on fresh held-out images. The copied fraction of a "
    "run is estimated per sample (copy rate beyond a disjoint fresh set's, Newcombe "
    "interval) and by membership (how often a sample's nearest real image is a training "
    "image, beyond the exchangeable rate n_train / n_real, in the descriptor's space and "
    "in pixels); a run is flagged when the p-value of 'copied fraction <= tolerance', the "
    "smallest of the three times three (Bonferroni), is below flag_p, i.e. when a one-sided "
    "lower bound exceeds the tolerance. The report adjusts these p-values over its runs "
    "(Holm). C_T and the AUC of 'closer to the training images than fresh images' are "
    "diagnostics, not gates"
)


@dataclass(frozen=True)
class CopySettings:
    max_shift: int = 3  # pixels the NCC stage undoes; the descriptor learns up to side/4
    alpha: float = 0.01  # per-image false-positive rate the calibration aims at
    flag_p: float = 0.01  # family-wise error of "this run copies more than the tolerance"
    # Copied fraction tolerated: the per-image false-positive rate's order, and the
    # smallest share the per-sample estimate resolves at N = 500 (see docs/copy-audit.md).
    tolerance: float = 0.01
    neighbours: int = 16  # descriptor candidates handed to the pixel stage
    calibration: int = 1000  # at most this many fresh images in each of calibration and check
    min_per_cell: int = 20  # C_T: samples and fresh images a cell needs to count
    pixel: ncc.PixelSearch | None = None  # retrieval sizes and blocks (defaults)
    descriptor: descriptor.DescriptorSettings = field(default_factory=descriptor.DescriptorSettings)

    def search(self) -> ncc.PixelSearch:
        return self.pixel or ncc.PixelSearch(max_shift=self.max_shift)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pixel"] = self.search().to_dict()
        return d

    def result_key(self) -> dict[str, Any]:
        """What changes a per-sample statistic (block sizes, the verdict's levels and the
        tolerance change none)."""
        d = self.to_dict()
        d["pixel"] = {k: v for k, v in d["pixel"].items() if k not in ("chunk", "cpu_chunk")}
        for k in ("flag_p", "tolerance", "alpha"):
            d.pop(k)
        return d
