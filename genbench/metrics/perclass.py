"""Per-class scores: each class's samples against the reference images of that class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genbench.metrics.fidelity import FidelitySettings, fidelity_from_features
from genbench.metrics.units import UnitInputs, UnitResult


def per_class_scores(
    gen: torch.Tensor,
    gen_labels: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    *,
    class_names: tuple[str, ...],
    settings: FidelitySettings,
) -> dict[str, Any]:
    """FID and KID per class, and their means over the classes where they could be computed."""
    classes: dict[str, Any] = {}
    for i, name in enumerate(class_names):
        g, r = gen[gen_labels == i], ref[ref_labels == i]
        res = fidelity_from_features(
            {"f": g},
            {"f": r},
            names=["fid", "kid"],
            feature_layer="f",
            logits_layer=None,
            settings=settings,
            low_rank_fid=True,
        )
        classes[name] = {
            "n": len(g),
            "n_ref": len(r),
            "fid": res.scores.get("fid"),
            "kid": res.scores.get("kid"),
            **({"unavailable": res.unavailable} if res.unavailable else {}),
        }
    fids = [c["fid"] for c in classes.values() if c["fid"] is not None]
    kids = [c["kid"]["mean"] for c in classes.values() if c["kid"] is not None]
    return {
        "classes": classes,
        "fid_mean": float(np.mean(fids)) if fids else None,
        "kid_mean": float(np.mean(kids)) if kids else None,
        "classes_scored": len(fids),
        "note": "per-class N is small: per-class FID is strongly biased upward; compare at equal N",
    }


def per_class_unit(x: UnitInputs) -> UnitResult:
    """Only for sample sets with intended classes and references with labels; silent otherwise."""
    ref_labels = x.parts.reference.labels
    if x.labels is None or ref_labels is None:
        return UnitResult()
    gen, ref, choice = x.features("inception")
    layer = choice.feature_layer
    block = per_class_scores(
        gen[layer],
        x.labels,
        ref[layer],
        ref_labels,
        class_names=x.bundle.spec.class_names,
        settings=x.settings,
    )
    return UnitResult(
        scores={"fid_class_mean": block["fid_mean"], "kid_class_mean": block["kid_mean"]},
        blocks={"per_class": block},
    )
