"""Small statistics shared by the metrics and the report."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval (2.5th and 97.5th percentiles, numpy's linear method)."""
    lo, hi = np.quantile(np.asarray(values), [0.025, 0.975])
    return float(lo), float(hi)
