"""What the data supports: copy flags, the real-data floor test, sampling-noise
intervals from the bootstrap replicates, and the pairwise separation matrix.

Reads only what the scoring side wrote into each run folder (metrics.json's
``copies`` and ``bootstrap`` entries, RUN/bootstrap.json). Old folders without
them still report: no flag, no sampling interval, point comparisons only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genbench.report.collect import RunRecord
from genbench.utils.stats import percentile_ci

#: Below this many samples FID's bias dominates: the report leads with KID (unbiased).
SMALL_N = 2048
COPY_MARK = "⚠copies"
FLOOR_MARK = "at the real-data floor: check the copy audit"
COPY_NOTE = "flagged for copying training images: never ranked or marked best"
DERIVED_NOTE = (
    "these models make each sample from training images at sampling time (they declare "
    "it), so they are ranked apart from models that sample from noise"
)
SAMPLING_ONLY = "sampling only"
BEATS = "beats"
NOT_SEPARATED = "not separated"
SAMPLING_AHEAD = "ahead on sampling noise only (1 training seed)"
FLAGGED = "flagged"
BOOT_METRICS = ("fid", "kid")


def copies(rec: RunRecord) -> dict[str, Any]:
    c = rec.metrics.get("copies")
    return c if isinstance(c, dict) else {}


def is_derived(rec: RunRecord) -> bool:
    """The model declares that it makes samples from training images (by design)."""
    return bool(rec.metrics.get("derived_from_training"))


def audit_found_copying(rec: RunRecord) -> bool:
    """The audit's flag, under the report's family-wise (Holm) control over its runs
    where the run has a copied-fraction verdict (see ``collect.grid_copy_flags``)."""
    cp = copies(rec)
    grid = cp.get("grid")
    return bool(grid.get("flagged") if isinstance(grid, dict) else cp.get("flagged"))


def is_flagged(rec: RunRecord) -> bool:
    """Flagged for copying: the audit found it and the model did not declare it. A declared
    model is ranked in its own group, with the audit's finding stated (:data:`DERIVED_NOTE`)."""
    return audit_found_copying(rec) and not is_derived(rec)


def derived_text(recs: Sequence[RunRecord]) -> str:
    found = any(audit_found_copying(r) for r in recs)
    how = sorted({b for r in recs for b in (copies(r).get("flagged_by") or [])})
    audit = f"copying detected ({', '.join(how)})" if found else "no copying detected"
    return f"derived from training images (by design); copy audit: {audit}"


def lead_metric(n: float | None) -> str:
    """KID at small N (unbiased), FID otherwise."""
    return "kid" if n is not None and math.isfinite(n) and n < SMALL_N else "fid"


def _interval(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        lo, hi = v
        if all(isinstance(x, (int, float)) and math.isfinite(x) for x in (lo, hi)):
            return float(lo), float(hi)
    return None


# -- bootstrap replicates ---------------------------------------------------------------
@dataclass(frozen=True)
class Replicates:
    """One run's (or one model's seed-averaged) bootstrap replicates of one metric.

    ``key`` (n, seed, n_samples): replicates pair up only where it is equal."""

    key: tuple[Any, ...]
    values: np.ndarray


def replicates(rec: RunRecord, metric: str) -> Replicates | None:
    data = rec.bootstrap()
    vals = data.get(metric) if data else None
    if not isinstance(vals, list) or len(vals) < 2:
        return None
    try:
        arr = np.asarray(vals, dtype=float)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(arr).all():
        return None
    key = (data.get("n"), data.get("seed"), data.get("n_samples"))
    return Replicates(key, arr) if key[0] == len(arr) else Replicates((len(arr), *key[1:]), arr)


def mean_replicates(recs: Sequence[RunRecord], metric: str) -> Replicates | None:
    """Replicate b averaged over the training seeds (all must pair up), else None."""
    reps = [replicates(r, metric) for r in recs]
    if not reps or any(r is None for r in reps):
        return None
    keys = {r.key for r in reps if r is not None}
    if len(keys) != 1:
        return None
    stack = np.stack([r.values for r in reps if r is not None])
    return Replicates(next(iter(keys)), stack.mean(axis=0))


def sampling_ci(recs: Sequence[RunRecord], metric: str) -> tuple[float, float] | None:
    """The sampling-only 95% interval of one run or of a model's seed mean."""
    if len(recs) == 1:
        boot = recs[0].metrics.get("bootstrap")
        ci = _interval(boot.get(f"{metric}_ci95")) if isinstance(boot, dict) else None
        if ci is not None:
            return ci
    rep = mean_replicates(recs, metric)
    return percentile_ci(rep.values) if rep is not None else None


def _score(rec: RunRecord, metric: str) -> float | None:
    v = (rec.metrics.get("scores") or {}).get(metric)
    if isinstance(v, dict):
        v = v.get("mean")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


# -- floor test -------------------------------------------------------------------------
def at_floor(recs: Sequence[RunRecord], real: RunRecord | None) -> bool:
    """Statistically indistinguishable from, or better than, the real-data row (FID or
    KID, lower is better): the 2.5% quantile of the paired replicate differences
    run[b] - real[b] is <= 0. Without paired replicates: the point value is <= real's."""
    if real is None or not recs:
        return False
    for metric in BOOT_METRICS:
        rr = replicates(real, metric)
        rm = mean_replicates(recs, metric)
        if rr is not None and rm is not None and rr.key == rm.key:
            if float(np.quantile(rm.values - rr.values, 0.025)) <= 0:
                return True
            continue
        vals = [_score(r, metric) for r in recs]
        ref = _score(real, metric)
        known = [v for v in vals if v is not None]
        if ref is not None and known and len(known) == len(vals) and np.mean(known) <= ref:
            return True
    return False


# -- pairwise separation ----------------------------------------------------------------
@dataclass
class Pair:
    a: str
    b: str
    metric: str
    verdict: str  # BEATS, SAMPLING_AHEAD, NOT_SEPARATED or FLAGGED (a ahead of b when separated)
    winner: str | None
    difference: float | None  # mean(a) - mean(b)
    seed_ci95: tuple[float, float] | None
    bootstrap_ci95: tuple[float, float] | None
    n_seeds: tuple[int, int]

    def for_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "verdict": self.verdict,
            "winner": self.winner,
            "difference": self.difference,
            "seed_ci95": list(self.seed_ci95) if self.seed_ci95 else None,
            "bootstrap_ci95": list(self.bootstrap_ci95) if self.bootstrap_ci95 else None,
            "n_seeds": list(self.n_seeds),
        }


def welch_ci95(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """95% Welch interval of mean(a) - mean(b); None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    d = float(np.mean(a) - np.mean(b))
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof) * se)
    return d - half, d + half


def _excludes_zero(ci: tuple[float, float] | None) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def compare(
    a: str, recs_a: Sequence[RunRecord], b: str, recs_b: Sequence[RunRecord], metric: str
) -> Pair:
    """The claim the data supports about a vs b on ``metric`` (lower is better)."""
    n = (len(recs_a), len(recs_b))
    if any(is_flagged(r) for r in (*recs_a, *recs_b)):
        return Pair(a, b, metric, FLAGGED, None, None, None, None, n)
    va = [v for r in recs_a if (v := _score(r, metric)) is not None]
    vb = [v for r in recs_b if (v := _score(r, metric)) is not None]
    if not va or not vb:
        return Pair(a, b, metric, NOT_SEPARATED, None, None, None, None, n)
    diff = float(np.mean(va) - np.mean(vb))
    seed_ci = welch_ci95(va, vb)
    ra, rb = mean_replicates(recs_a, metric), mean_replicates(recs_b, metric)
    boot_ci = percentile_ci(ra.values - rb.values) if ra and rb and ra.key == rb.key else None
    winner = a if diff < 0 else b
    agree = boot_ci is not None and (boot_ci[1] < 0) == (diff < 0)
    if seed_ci is not None:
        same_side = (seed_ci[1] < 0) == (diff < 0)
        sep = _excludes_zero(seed_ci) and same_side and _excludes_zero(boot_ci) and agree
        verdict = BEATS if sep else NOT_SEPARATED
    elif min(n) < 2 and _excludes_zero(boot_ci) and agree:
        verdict = SAMPLING_AHEAD
    else:
        verdict = NOT_SEPARATED
    return Pair(
        a,
        b,
        metric,
        verdict,
        winner if verdict != NOT_SEPARATED else None,
        diff,
        seed_ci,
        boot_ci,
        n,
    )


def claim(p: Pair) -> str:
    """The pair as a sentence: "A beats B", "A ahead of B on sampling noise only ..."."""
    if p.verdict == FLAGGED:
        return f"{p.a} vs {p.b}: a run is flagged for copying, no claim"
    if p.verdict == NOT_SEPARATED or p.winner is None:
        return f"{p.a} and {p.b}: not separated"
    loser = p.b if p.winner == p.a else p.a
    if p.verdict == BEATS:
        return f"{p.winner} beats {loser}"
    return f"{p.winner} is ahead of {loser} on sampling noise only (1 training seed)"


def cell(p: Pair, row: str) -> str:
    """Matrix cell for ``row`` (one side of the pair) against the other side."""
    if p.verdict in (FLAGGED, NOT_SEPARATED) or p.winner is None:
        return p.verdict
    ahead = p.winner == row
    if p.verdict == BEATS:
        return "beats" if ahead else "beaten"
    return "ahead (sampling only)" if ahead else "behind (sampling only)"


def separation(models: dict[str, list[RunRecord]], metric: str) -> dict[str, Any]:
    """{"metric", "models", "matrix": row -> column -> cell, "pairs": [...]}."""
    names = list(models)
    matrix: dict[str, dict[str, str]] = {m: {} for m in names}
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p = compare(a, models[a], b, models[b], metric)
            pairs.append(p)
            matrix[a][b] = cell(p, a)
            matrix[b][a] = cell(p, b)
    for m in names:
        matrix[m][m] = ""
    return {
        "metric": metric,
        "models": names,
        "matrix": {m: {c: matrix[m][c] for c in names} for m in names},
        "pairs": [p.for_json() | {"claim": claim(p)} for p in pairs],
    }
