"""Gu et al.'s memorization criterion ("On Memorization in Diffusion Models", TMLR 2025),
reported beside the audit as an independent yardstick, never as part of its verdict: a
sample is memorized when its l2 distance to the nearest training image is below a third
of its distance to the second nearest. Raw pixels in [0, 1], every channel, at the data's
resolution; "training images" are the ones the model trained on (data.train_subset's N
when it is set). Fresh held-out images give the criterion's rate on never-seen images."""

from __future__ import annotations

from typing import Any

import torch

from genbench.metrics.audit.stats import wilson

THRESHOLD = 1 / 3
CRITERION = (
    "l2 distance to the nearest training image < 1/3 of the distance to the second nearest "
    "(Gu et al. 2025), raw pixels"
)


def nn_ratios(
    images: torch.Tensor,
    train: torch.Tensor,
    *,
    device: torch.device,
    chunk: int = 8192,
    shortlist: int = 8,
) -> torch.Tensor:
    """uint8 queries (N) against uint8 training images (M >= 2): N ratios d1 / d2 of the
    l2 distances to the nearest and second-nearest training image. A float32 search keeps
    ``shortlist`` candidates each, whose distances are then recomputed exactly in float64
    (the float32 expansion |a|^2 + |b|^2 - 2ab cancels to about 1e-3 at a copy's zero)."""
    q = images.to(device).flatten(1).float() / 255
    qn = (q * q).sum(1)
    k = min(shortlist, len(train))
    best_v = torch.full((len(q), k), torch.inf, device=device)
    best_i = torch.zeros((len(q), k), dtype=torch.long, device=device)
    for s in range(0, len(train), chunk):
        t = train[s : s + chunk].to(device).flatten(1).float() / 255
        d2 = qn[:, None] + (t * t).sum(1)[None] - 2 * (q @ t.T)
        cv, ci = d2.topk(min(k, d2.shape[1]), 1, largest=False)
        v, i = torch.cat([best_v, cv], 1).topk(k, 1, largest=False)
        best_i = torch.cat([best_i, ci + s], 1).gather(1, i)
        best_v = v
    cand = train[best_i.cpu()].to(device).flatten(2).double() / 255  # N x k x D
    qd = images.to(device).flatten(1).double() / 255
    exact = (cand - qd[:, None]).pow(2).sum(-1).sqrt()
    two = exact.topk(2, 1, largest=False).values
    return (two[:, 0] / two[:, 1].clamp_min(1e-12)).float().cpu()


def nn_ratio_block(samples: torch.Tensor, fresh: torch.Tensor) -> dict[str, Any]:
    """metrics.json's view: the share of samples memorized by the criterion, with its
    Wilson interval, beside the share of fresh held-out images it calls memorized."""
    k, n = int((samples < THRESHOLD).sum()), len(samples)
    kf, nf = int((fresh < THRESHOLD).sum()), len(fresh)
    return {
        "criterion": CRITERION,
        "threshold": THRESHOLD,
        "fraction": k / n if n else None,
        "ci95": list(wilson(k, n)),
        "n_memorized": k,
        "n": n,
        "fresh_fraction": kf / nf if nf else None,
        "fresh_ci95": list(wilson(kf, nf)),
        "n_fresh": nf,
        "median_ratio": float(samples.median()) if n else None,
    }
