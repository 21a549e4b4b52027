"""The distribution-level copy test: C_T of Meehan, Chaudhuri and Dasgupta (2020).

A per-sample threshold can be dodged one sample at a time (edit each copy just enough).
A set of samples that sits, as a whole, closer to the training images than fresh images
do cannot hide. In the learned copy descriptor's space:

1. the training split is cut into ``k`` cells by k-means;
2. in each cell, the distances to the nearest training image of the samples and of
   fresh held-out images (never trained on) are compared by a Mann-Whitney U test,
   giving ``Z_j`` (negative: the samples are closer than fresh images);
3. ``C_T = sum_j pi_j Z_j`` over the cells with at least ``min_per_cell`` of both, with
   ``pi_j`` the share of held-out images in cell j. Under "no copying" each ``Z_j`` is
   about N(0, 1), so ``C_T / sqrt(sum pi_j^2)`` is too; its lower tail is the p-value.

The run is flagged as copying when ``p < flag_p``. An under-fitted generator (samples
far from everything) gives ``C_T > 0``; fresh images from the data distribution give
``C_T`` about 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def kmeans(x: torch.Tensor, k: int, *, seed: int = 0, iters: int = 25) -> torch.Tensor:
    """k centroids of unit vectors x (N x D), k-means++ seeded, on x's device."""
    g = torch.Generator().manual_seed(seed)
    k = max(1, min(k, len(x)))
    first = int(torch.randint(len(x), (1,), generator=g))
    cent = [x[first]]
    d2 = ((x - cent[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = (d2 / d2.sum().clamp_min(1e-12)).cpu().double()
        nxt = int(torch.multinomial(p, 1, generator=g)) if float(p.sum()) > 0 else 0
        cent.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    c = torch.stack(cent)
    for _ in range(iters):
        assign = assign_cells(x, c)
        for j in range(k):
            m = assign == j
            if bool(m.any()):
                c[j] = x[m].mean(0)
    return c


def assign_cells(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, centroids).argmin(1)


def mann_whitney_z(samples: torch.Tensor, fresh: torch.Tensor) -> float:
    """Z of the U statistic "sample distance > fresh distance" (ties count half)."""
    m, n = len(samples), len(fresh)
    both = torch.cat([samples, fresh]).double()
    ranks = _average_ranks(both)
    u = float(ranks[:m].sum()) - m * (m + 1) / 2
    mu, sigma = m * n / 2, math.sqrt(m * n * (m + n + 1) / 12)
    return (u - mu) / sigma if sigma > 0 else 0.0


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    order = v.argsort()
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(1, len(v) + 1, dtype=v.dtype)
    # ties share their mean rank
    uniq, inv, counts = torch.unique(v, return_inverse=True, return_counts=True)
    if len(uniq) < len(v):
        sums = torch.zeros(len(uniq), dtype=v.dtype).index_add_(0, inv, ranks)
        ranks = (sums / counts)[inv]
    return ranks


def c_t_test(
    sample_dist: torch.Tensor,
    sample_cell: torch.Tensor,
    fresh_dist: torch.Tensor,
    fresh_cell: torch.Tensor,
    *,
    k: int,
    min_per_cell: int = 20,
    flag_p: float = 0.01,
) -> dict[str, Any]:
    """C_T from nearest-training distances and cells of the samples and of fresh images."""
    from scipy.stats import norm

    zs, weights, cells = [], [], []
    n_fresh = len(fresh_dist)
    for j in range(k):
        s, f = sample_dist[sample_cell == j], fresh_dist[fresh_cell == j]
        if len(s) >= min_per_cell and len(f) >= min_per_cell:
            z = mann_whitney_z(s, f)
            zs.append(z)
            weights.append(len(f) / n_fresh)
            cells.append({"cell": j, "n_samples": len(s), "n_fresh": len(f), "z": round(z, 3)})
    if not zs:
        return {
            "c_t": None,
            "p_value": None,
            "flagged": False,
            "cells": [],
            "unavailable": f"no cell holds {min_per_cell} samples and {min_per_cell} fresh images",
        }
    w = torch.tensor(weights, dtype=torch.float64)
    z = torch.tensor(zs, dtype=torch.float64)
    c_t = float((w * z).sum())
    z_all = c_t / float(w.pow(2).sum().sqrt())
    p = float(norm.cdf(z_all))
    return {
        "c_t": c_t,
        "z": z_all,
        "p_value": p,
        "flagged": bool(p < flag_p),
        "cells_used": len(zs),
        "cells": cells,
        "weight_used": float(w.sum()),
        "samples_in_used_cells": int(sum(c["n_samples"] for c in cells)),
    }
