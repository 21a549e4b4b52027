"""FID, KID, precision/recall and Inception Score together, from extracted features, outside
a scoring call (per-class scores, ``genbench bench``). Each metric has its own module
(:mod:`~genbench.metrics.fid`, :mod:`~genbench.metrics.kid`, :mod:`~genbench.metrics.prc`,
:mod:`~genbench.metrics.isc`), which defines its unit's function.

Working from features lets per-class scores and the copy audit reuse one (slow) Inception
pass.
"""

from __future__ import annotations

import torch

from genbench.metrics.fid import fid_result
from genbench.metrics.isc import isc_result
from genbench.metrics.kid import kid_result
from genbench.metrics.prc import prc_result
from genbench.metrics.settings import FidelitySettings
from genbench.metrics.units import UnitResult, finite

__all__ = ["FidelitySettings", "fidelity_from_features"]


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
