"""The copy verdict of one sample set: per-sample calibration on fresh images, the copied
fraction estimated per sample and by membership, each against the tolerance, and the
"closer than fresh images" diagnostics (C_T and its AUC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import genbench.metrics.audit.datacopy as datacopy
from genbench.metrics.audit.copies import QueryStats
from genbench.metrics.audit.membership import Membership, membership_block
from genbench.metrics.audit.settings import ESTIMATORS, STAGE, STATS, CopySettings
from genbench.metrics.audit.stats import auc_closer, difference_estimate, wilson


@dataclass
class Calibration:
    thresholds: dict[str, float]
    n: int

    def caught(self, s: QueryStats) -> dict[str, torch.Tensor]:
        return {k: s.stats[k] < t for k, t in self.thresholds.items()}

    def flags(self, s: QueryStats) -> torch.Tensor:
        c = list(self.caught(s).values())
        out = torch.zeros_like(c[0])
        for x in c:
            out |= x
        return out


def calibrate(held: QueryStats, alpha: float) -> Calibration:
    """Thresholds at the alpha/S quantile of each of the S statistics over fresh images."""
    q = alpha / len(STATS)
    return Calibration(
        {k: float(torch.quantile(held.stats[k].double(), q)) for k in STATS},
        len(held.train_dist),
    )


def _stages(gen: QueryStats, cal: Calibration) -> dict[str, int]:
    """Samples each stage caught (by any of its statistics)."""
    by_stage: dict[str, torch.Tensor] = {}
    for name, hit in cal.caught(gen).items():
        st = STAGE[name]
        by_stage[st] = by_stage[st] | hit if st in by_stage else hit
    return {st: int(hit.sum()) for st, hit in by_stage.items()}


def verdict(
    gen: QueryStats,
    cal: Calibration,
    check: QueryStats,
    fresh: QueryStats,
    settings: CopySettings,
    *,
    k: int,
    membership: list[Membership],
) -> dict[str, Any]:
    """metrics.json's ``copies`` block (less the run's bookkeeping)."""
    flags = cal.flags(gen)
    n, kk = len(flags), int(flags.sum())
    kc, nc = int(cal.flags(check).sum()), len(check.train_dist)
    # Every estimator is a test of "copied fraction <= tolerance"; Bonferroni over them.
    m = 1 + len(membership)
    level = settings.flag_p / m
    per_sample = difference_estimate(kk, n, kc, nc, tolerance=settings.tolerance, level=level)
    estimates = {ESTIMATORS[0]: per_sample}
    for mb, name in zip(membership, ESTIMATORS[1:], strict=False):
        estimates[name] = mb.estimate(tolerance=settings.tolerance, level=level)
    p_run = min(1.0, m * min(e.p_value for e in estimates.values()))
    ct = datacopy.c_t_test(
        gen.train_dist,
        gen.cell,
        fresh.train_dist,
        fresh.cell,
        k=k,
        min_per_cell=settings.min_per_cell,
        flag_p=settings.flag_p,
    )
    ct.pop("flagged", None)  # a diagnostic now, not a gate
    return {
        "rate": kk / n if n else None,
        "rate_ci95": list(wilson(kk, n)),
        "n_copies": kk,
        "n_samples": n,
        "heldout_rate": kc / nc if nc else None,
        "heldout_rate_ci95": list(wilson(kc, nc)),
        "n_heldout_check": nc,
        "n_heldout_calibration": cal.n,
        "copied_fraction": {
            "per_sample": per_sample.to_dict(),
            "membership": membership_block(membership, tolerance=settings.tolerance, level=level),
        },
        "tolerance": settings.tolerance,
        "flag_p": settings.flag_p,
        "tests": m,
        "p_value": p_run,
        "flagged": bool(p_run < settings.flag_p),
        "flagged_by": [name for name, e in estimates.items() if e.exceeds()],
        "caught_by_stage": _stages(gen, cal),
        "thresholds": cal.thresholds,
        "closer_than_fresh": {
            **auc_closer(gen.train_dist.tolist(), fresh.train_dist.tolist()),
            "c_t": ct,
        },
        "median_train_distance": {
            "samples": float(gen.train_dist.median()) if n else None,
            "fresh": float(fresh.train_dist.median()) if len(fresh.train_dist) else None,
        },
    }


def concat_stats(a: QueryStats, b: QueryStats) -> QueryStats:
    """Two fresh sets as one (statistics, distances and cells; the matches are a's)."""
    return QueryStats(
        {k: torch.cat([a.stats[k], b.stats[k]]) for k in STATS},
        torch.cat([a.desc_index, b.desc_index]),
        a.ncc,  # not used for the fresh union
        a.mix,
        torch.cat([a.train_dist, b.train_dist]),
        torch.cat([a.cell, b.cell]),
    )
