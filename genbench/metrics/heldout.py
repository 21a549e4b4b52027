"""The parts a scoring call cuts the held-out split into (see
:func:`genbench.metrics.scoring.heldout_parts`). A module of its own so that the unit
inputs (:mod:`genbench.metrics.units`) can name the type without importing scoring."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genbench.data import ImageSet


@dataclass
class HeldoutParts:
    """Disjoint parts of the held-out split: the FID/KID reference, the real-data
    row's images, and the copy audit's calibration and check sets."""

    reference: ImageSet
    real: ImageSet
    calibration: ImageSet
    check: ImageSet
    notes: list[str]
    # Each part's positions in the held-out split (the copy audit's pool holds all of it).
    positions: dict[str, torch.Tensor] = field(default_factory=dict)
