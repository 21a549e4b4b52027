"""Membership: is a sample's nearest real image a training image more often than chance?

Every real image in the audit's pool is either one the generator trained on or one it
never saw (the validation slice and the held-out split). If the generator's samples do
not depend on which images landed in training and which did not (the split is
exchangeable), a sample's nearest real image is a training image with probability
``r0 = n_train / (n_train + n_other)``, however typical or atypical the samples are.
Copies, and edited copies whose nearest image is still their source, raise the rate;
``(rate - r0) / (1 - r0)`` estimates the fraction of samples tied to a training image.

The test counts each **distinct** nearest real image once. Samples are not independent
draws: a mode-collapsed generator's samples share one nearest image, and counting each
would turn one coin flip (is that image a training image?) into hundreds. Under
exchangeability each distinct nearest image is a training image with probability ``r0``
whatever the samples' dependence, so the estimate ``(r_d - r0) / (1 - r0)`` over the
distinct images, with its interval, is the reading that is tested; the per-sample rate is
reported beside it. Copies of many training images give many distinct nearest images, so
the distinct count loses little power on them.

It is measured in two representations: the learned copy descriptor (blind to the edits
it was trained on) and pixels (the audit's canonical grey images, by correlation). A tie
between a training and a non-training image counts half. Images of the audited set that
are in the pool themselves (the real-data row) are left out of the pool for every query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genbench.metrics.audit.stats import Estimate, excess_estimate


@dataclass
class Membership:
    """One representation's reading: ``hits`` of ``n`` samples (ties count half) have a
    training image as their nearest real image; ``distinct_hits`` of the ``distinct``
    distinct nearest images are training images (the tested reading); ``null`` is the
    exchangeable rate."""

    space: str
    hits: float
    n: int
    null: float
    distinct_hits: float
    distinct: int

    def estimate(self, *, tolerance: float, level: float) -> Estimate:
        return excess_estimate(
            self.distinct_hits, self.distinct, null=self.null, tolerance=tolerance, level=level
        )


def distinct_reading(nearest: torch.Tensor, is_train: torch.Tensor) -> tuple[float, int]:
    """(training images among, number of) the distinct pool positions in ``nearest``."""
    uniq = nearest.unique()
    return float(is_train[uniq].sum()), len(uniq)


def _best(
    q: torch.Tensor,
    base: torch.Tensor,
    positions: torch.Tensor,
    own: torch.Tensor | None,
    *,
    device: torch.device,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best similarity (dot product) of each query against the base rows at ``positions``
    and that row's base position, exact, in blocks; ``own``: each query's own base
    position (-1: none), never its match."""
    best = torch.full((len(q),), -torch.inf, device=device)
    where = torch.zeros(len(q), dtype=torch.long, device=device)
    qd = q.to(device)
    ownd = own.to(device) if own is not None else None
    for s in range(0, len(positions), chunk):
        pos = positions[s : s + chunk].to(device)
        sim = qd @ base[pos.cpu()].to(device).T
        if ownd is not None:
            sim = torch.where(pos[None] == ownd[:, None], -torch.inf, sim)
        v, i = sim.max(1)
        better = v > best
        best = torch.where(better, v, best)
        where = torch.where(better, pos[i], where)
    return best.cpu(), where.cpu()


def nearest_is_train(
    q: torch.Tensor,
    base: torch.Tensor,
    is_train: torch.Tensor,
    *,
    own: torch.Tensor | None = None,
    device: torch.device,
    chunk: int = 16384,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Per query: 1 when its most similar base vector is a training image's, 0 when it is
    another's, 0.5 on a tie; the exchangeable rate (the mean over queries, each without
    its ``own`` base position, -1 for none); and each query's nearest base position (the
    training image's on a tie). Vectors are unit-normalised by the caller."""
    train, other = is_train.nonzero()[:, 0], (~is_train).nonzero()[:, 0]
    if not len(train) or not len(other):
        return torch.full((len(q),), float("nan")), float("nan"), torch.full((len(q),), -1)
    st, at = _best(q, base, train, own, device=device, chunk=chunk)
    so, ao = _best(q, base, other, own, device=device, chunk=chunk)
    hit = (st > so).double() + 0.5 * (st == so).double()
    nearest = torch.where(st >= so, at, ao)
    n_train = torch.full((len(q),), float(len(train)), dtype=torch.float64)
    n_other = torch.full((len(q),), float(len(other)), dtype=torch.float64)
    if own is not None:
        mine = own >= 0
        own_train = torch.zeros(len(q), dtype=torch.bool)
        own_train[mine] = is_train[own[mine]]
        n_train -= (mine & own_train).double()
        n_other -= (mine & ~own_train).double()
    return hit, float((n_train / (n_train + n_other)).mean()), nearest


def pixel_vectors(canonical: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W canonical images -> unit vectors of their centred pixels (correlation)."""
    v = canonical.flatten(1)
    v = v - v.mean(1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


def membership_block(
    readings: list[Membership], *, tolerance: float, level: float
) -> dict[str, Any]:
    """metrics.json's view of each representation's reading."""
    out: dict[str, Any] = {}
    for m in readings:
        e = m.estimate(tolerance=tolerance, level=level)
        out[m.space] = {
            "nearest_is_training": round(m.hits / m.n, 5) if m.n else None,
            "null_rate": round(m.null, 5),
            "n": m.n,
            # the tested reading: each distinct nearest real image once
            "distinct_nearest": m.distinct,
            "distinct_is_training": round(m.distinct_hits / m.distinct, 5) if m.distinct else None,
            **e.to_dict(),
        }
    return out
