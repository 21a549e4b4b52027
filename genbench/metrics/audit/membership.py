"""Membership: is a sample's nearest real image a training image more often than chance?

Every real image in the audit's pool is either one the generator trained on or one it
never saw (the validation slice and the held-out split). If the generator's samples do
not depend on which images landed in training and which did not (the split is
exchangeable), a sample's nearest real image is a training image with probability
``r0 = n_train / (n_train + n_other)``, however typical or atypical the samples are.
Copies, and edited copies whose nearest image is still their source, raise the rate;
``(rate - r0) / (1 - r0)`` estimates the fraction of samples tied to a training image.

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
    training image as their nearest real image; ``null`` is the exchangeable rate."""

    space: str
    hits: float
    n: int
    null: float

    def estimate(self, *, tolerance: float, level: float) -> Estimate:
        return excess_estimate(self.hits, self.n, null=self.null, tolerance=tolerance, level=level)


def _best(
    q: torch.Tensor,
    base: torch.Tensor,
    positions: torch.Tensor,
    own: torch.Tensor | None,
    *,
    device: torch.device,
    chunk: int,
) -> torch.Tensor:
    """Best similarity (dot product) of each query against the base rows at ``positions``,
    exact, in blocks; ``own``: each query's own base position (-1: none), never its match."""
    best = torch.full((len(q),), -torch.inf, device=device)
    qd = q.to(device)
    ownd = own.to(device) if own is not None else None
    for s in range(0, len(positions), chunk):
        pos = positions[s : s + chunk].to(device)
        sim = qd @ base[pos.cpu()].to(device).T
        if ownd is not None:
            sim = torch.where(pos[None] == ownd[:, None], -torch.inf, sim)
        best = torch.maximum(best, sim.amax(1))
    return best.cpu()


def nearest_is_train(
    q: torch.Tensor,
    base: torch.Tensor,
    is_train: torch.Tensor,
    *,
    own: torch.Tensor | None = None,
    device: torch.device,
    chunk: int = 16384,
) -> tuple[torch.Tensor, float]:
    """Per query: 1 when its most similar base vector is a training image's, 0 when it is
    another's, 0.5 on a tie; and the exchangeable rate (the mean over queries, each without
    its ``own`` base position, -1 for none). Vectors are unit-normalised by the caller."""
    train, other = is_train.nonzero()[:, 0], (~is_train).nonzero()[:, 0]
    if not len(train) or not len(other):
        return torch.full((len(q),), float("nan")), float("nan")
    st = _best(q, base, train, own, device=device, chunk=chunk)
    so = _best(q, base, other, own, device=device, chunk=chunk)
    hit = (st > so).double() + 0.5 * (st == so).double()
    n_train = torch.full((len(q),), float(len(train)), dtype=torch.float64)
    n_other = torch.full((len(q),), float(len(other)), dtype=torch.float64)
    if own is not None:
        mine = own >= 0
        own_train = torch.zeros(len(q), dtype=torch.bool)
        own_train[mine] = is_train[own[mine]]
        n_train -= (mine & own_train).double()
        n_other -= (mine & ~own_train).double()
    return hit, float((n_train / (n_train + n_other)).mean())


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
            **e.to_dict(),
        }
    return out
