"""The copy verdict's statistics: intervals of proportions, the copied-fraction estimates
with their one-sided bounds and p-values against a tolerance, an AUC with its interval,
and Holm's step-down adjustment for a grid of runs.

Each copied-fraction estimate ``f`` comes with a function ``bound(z)``: its lower
confidence bound at normal quantile ``z`` (decreasing in ``z``; a negative ``z`` gives the
upper bound). The p-value of "f <= tolerance" is ``1 - Phi(z*)`` where ``bound(z*)`` equals
the tolerance, so "p < level" and "the one-sided lower bound at 1 - level exceeds the
tolerance" are the same statement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959964


def wilson_bound(k: float, n: int, z: float) -> float:
    """Wilson score bound of a proportion k/n at normal quantile z: the lower bound for
    z > 0, the upper for z < 0 (exact 0 and 1 at the ends)."""
    if n <= 0:
        return math.nan
    p = min(1.0, max(0.0, k / n))
    if (p == 0 and z >= 0) or (p == 1 and z <= 0):
        return p  # exactly the end, not a float residue of it
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return min(1.0, max(0.0, centre - half))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Two-sided Wilson score interval of a proportion (sensible at 0 and 1)."""
    if n == 0:
        return math.nan, math.nan
    return wilson_bound(k, n, z), wilson_bound(k, n, -z)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _norm_isf(p: float) -> float:
    """z with P(Z > z) = p (bisection: no scipy at import time)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _norm_sf(mid) > p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Estimate:
    """A copied-fraction estimate: the point, its 95% interval, the one-sided lower bound
    at the flagging level, and the p-value of "no more than ``tolerance``"."""

    fraction: float
    ci95: tuple[float, float]
    lower: float
    level: float
    p_value: float
    tolerance: float

    def exceeds(self) -> bool:
        return self.p_value < self.level

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": _r(self.fraction),
            "ci95": [_r(self.ci95[0]), _r(self.ci95[1])],
            "lower_bound": _r(self.lower),
            "lower_bound_level": self.level,
            "p_value": self.p_value,
        }


def _r(v: float) -> float | None:
    return round(v, 5) if math.isfinite(v) else None


def _estimate(
    point: float, bound: Callable[[float], float], *, tolerance: float, level: float
) -> Estimate:
    if not math.isfinite(point):
        return Estimate(math.nan, (math.nan, math.nan), math.nan, level, 1.0, tolerance)
    lo, hi = -40.0, 40.0  # bound() decreases in z: find z* with bound(z*) = tolerance
    if bound(lo) <= tolerance:
        p = 1.0
    elif bound(hi) > tolerance:
        p = 0.0
    else:
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if bound(mid) > tolerance else (lo, mid)
        p = _norm_sf((lo + hi) / 2)
    return Estimate(point, (bound(Z95), bound(-Z95)), bound(_norm_isf(level)), level, p, tolerance)


def excess_estimate(
    hits: float, n: int, *, null: float, tolerance: float, level: float
) -> Estimate:
    """The fraction of samples tied to a training image from a rate against a known
    exchangeable rate: ``(rate - null) / (1 - null)`` (membership)."""
    if n <= 0 or not math.isfinite(null) or null >= 1:
        return _estimate(math.nan, lambda z: math.nan, tolerance=tolerance, level=level)

    def bound(z: float) -> float:
        return (wilson_bound(hits, n, z) - null) / (1 - null)

    return _estimate((hits / n - null) / (1 - null), bound, tolerance=tolerance, level=level)


def difference_estimate(
    k: int, n: int, k_ref: int, n_ref: int, *, tolerance: float, level: float
) -> Estimate:
    """The fraction of samples caught beyond the false-positive rate measured on fresh
    images, ``(p - p_ref) / (1 - p_ref)``, with Newcombe's hybrid score bounds for the
    difference of two proportions (per-sample copies)."""
    if n <= 0 or n_ref <= 0:
        return _estimate(math.nan, lambda z: math.nan, tolerance=tolerance, level=level)
    p, q = k / n, k_ref / n_ref

    def bound(z: float) -> float:
        if z >= 0:
            d = (p - q) - math.hypot(p - wilson_bound(k, n, z), wilson_bound(k_ref, n_ref, -z) - q)
        else:
            d = (p - q) + math.hypot(wilson_bound(k, n, z) - p, q - wilson_bound(k_ref, n_ref, -z))
        return d / (1 - q) if q < 1 else math.nan

    return _estimate(
        (p - q) / (1 - q) if q < 1 else math.nan, bound, tolerance=tolerance, level=level
    )


def auc_closer(sample_d: Sequence[float], fresh_d: Sequence[float]) -> dict[str, Any]:
    """P(a sample is closer to the training images than a fresh image), ties half, with
    the Hanley-McNeil 95% interval: 0.5 when the samples sit like fresh images."""
    import torch

    s = torch.as_tensor(sample_d, dtype=torch.float64)
    f = torch.as_tensor(fresh_d, dtype=torch.float64)
    m, n = len(s), len(f)
    if m == 0 or n == 0:
        return {"auc": None, "auc_ci95": [None, None]}
    f_sorted = f.sort().values
    below = torch.searchsorted(f_sorted, s, right=False)  # fresh strictly closer than s
    upto = torch.searchsorted(f_sorted, s, right=True)
    closer = (n - upto).double() + 0.5 * (upto - below).double()  # fresh farther than s
    a = float(closer.sum()) / (m * n)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n)
    half = Z95 * math.sqrt(max(var, 0.0))
    return {
        "auc": round(a, 5),
        "auc_ci95": [round(max(0.0, a - half), 5), round(min(1.0, a + half), 5)],
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control over a grid)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
