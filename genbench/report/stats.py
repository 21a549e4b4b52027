"""The summary's statistics: per-run rows, mean ± 95% CI over training seeds per
model, the real-data floor on top, best values marked and models ranked, the
separation matrix, and rows measured under different protocols kept in separate,
labelled groups. :mod:`genbench.report.render` writes the result as text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import genbench.report.curves as curves
import genbench.report.verdict as verdict
from genbench.metrics.protocol import COMPARABLE_KEYS, mark_comparable
from genbench.report.collect import RunRecord, run_row
from genbench.report.columns import (
    COLUMN,
    COLUMNS,
    EXTRA_MEANS,
    ID_COLUMNS,
    QUALITY,
    TAIL_COLUMNS,
    assign_variants,
    is_true,
    model_label,
    variant_text,
)
from genbench.report.curves import Curves

CI_NOTE = (
    "Values are means over training seeds ± the 95% Student-t confidence interval. With one "
    "training seed, FID and KID show the bootstrap 95% interval over the generated samples "
    "in brackets, labelled 'sampling only' (it leaves out training noise); n/a where there is "
    "none. Bold: the best mean in a column among the unflagged models of one protocol group. "
    "'⚠copies': flagged by the copy audit, never ranked or marked best. At N < 2048 the "
    "report leads with KID (unbiased). 'A beats B' only where both the training-seed interval "
    "and the paired bootstrap over samples separate them; see the separation matrix."
)


# -- statistics ----------------------------------------------------------------------
def t_ci95(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% Student-t interval, n); the half-width is NaN for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, 1
    from scipy import stats

    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    if half <= 1e-9 * abs(mean):
        half = 0.0  # equal values whose mean differs in the last bit
    return mean, half, n


# -- the summary -----------------------------------------------------------------------
@dataclass
class Group:
    """Rows measured under one protocol (fingerprint) in one experiment."""

    experiment: str
    fingerprint: str
    protocol: dict[str, Any]
    main: bool  # the experiment's reference protocol (the most common one)
    differences: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n: int | None = None  # generated samples per run (the protocol's N)
    lead: str = "fid"  # the metric the group is ranked on: KID at small N
    separation: dict[str, Any] = field(default_factory=dict)  # metric -> matrix (verdict.py)
    derived: bool = False  # models that make samples from training images, ranked apart
    curves: Curves | None = None  # quality vs training compute (curves.py), when snapshotted

    @property
    def key(self) -> tuple[str, str, bool]:
        return self.experiment, self.fingerprint, self.derived

    @property
    def title(self) -> str:
        if not self.fingerprint:
            return f"{self.experiment}: not scored"
        extra = ", derived from training images (by design)" if self.derived else ""
        if self.protocol.get("dtype") == "bfloat16":  # metrics.precision: not fp32 Inception
            extra = ", Inception in bf16" + extra
        return f"{self.experiment}: protocol {self.fingerprint}{extra}"


@dataclass
class Summary:
    table: pd.DataFrame  # every row: real, mean (per model) and run (per seed), in display order
    groups: list[Group]
    failed: list[dict[str, Any]]  # runs that are not done: run_id, model, seed, status, error
    variants: dict[str, dict[str, str]]  # run_id -> varying config keys
    records: list[RunRecord]

    def rows(self, group: Group, kind: str) -> pd.DataFrame:
        t = self.table
        if t.empty:
            return t
        sel = (t["row"] == kind) & (t["experiment"] == group.experiment)
        sel &= t["protocol"] == group.fingerprint
        if kind != "real" and "derived" in t:  # the real-data floor is every group's
            sel &= t["derived"].map(is_true) == group.derived
        return t[sel]

    def for_json(self) -> dict[str, Any]:
        return {
            "columns": {
                c.key: {"label": c.label, "better": c.better, "kind": c.kind} for c in COLUMNS
            },
            "note": CI_NOTE,
            "groups": [
                {
                    "experiment": g.experiment,
                    "fingerprint": g.fingerprint,
                    "main": g.main,
                    "differences_from_main": g.differences,
                    "protocol": g.protocol,
                    "warnings": g.warnings,
                    "n": g.n,
                    "lead_metric": g.lead,
                    "separation": g.separation,
                    "curves": g.curves.for_json() if g.curves else None,
                    "derived_from_training": g.derived,
                }
                for g in self.groups
            ],
            "rows": [_json_row(r) for r in self.table.to_dict(orient="records")],
            "failed": self.failed,
        }


def _clean(v: Any) -> Any:
    if v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _json_row(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: _clean(v) for k, v in r.items()}
    for k in ("seed", "n_seeds", "nfe", "n"):
        if isinstance(out.get(k), float) and out[k] == int(out[k]):
            out[k] = int(out[k])
    return out


def _protocol_summary(proto: dict[str, Any]) -> dict[str, Any]:
    # Only the comparable part: it says what was measured and holds no paths or timings.
    return {k: proto.get(k) for k in COMPARABLE_KEYS if k in proto}


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _failed(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Runs that are not done (or have no metrics), as the summary lists them."""
    return [
        {
            "run_id": r.run_id,
            "experiment": r.experiment,
            "model": r.model,
            "seed": r.seed,
            "status": r.status,
            "error": r.error,
        }
        for r in records
        if not r.done or not r.metrics
    ]


def summarize(records: list[RunRecord]) -> Summary:
    """Group, aggregate and rank the runs (see :data:`CI_NOTE`)."""
    variants = assign_variants(records)
    rows = []
    for r in records:
        row = run_row(r)
        row["variant"] = variant_text(variants.get(r.run_id, {}))
        rows.append(row)
    runs = pd.DataFrame(rows)
    failed = _failed(records)
    ok = [i for i, r in enumerate(records) if r.done and r.metrics]
    if runs.empty or not ok:
        table = _integers(_order_columns(runs.copy())) if not runs.empty else runs
        return Summary(table, [], failed, variants, records)

    # Comparability per experiment, against its most common protocol.
    groups: dict[tuple[str, str], Group] = {}
    runs["comparable"] = None
    runs["protocol_diff"] = None
    by_exp: dict[str, list[int]] = {}
    for i in ok:
        by_exp.setdefault(str(records[i].experiment), []).append(i)
    for exp, idx in sorted(by_exp.items()):
        marks = mark_comparable([records[i].metrics for i in idx])
        for i, (comparable, reasons) in zip(idx, marks, strict=True):
            rec = records[i]
            runs.loc[i, "comparable"] = bool(comparable)
            runs.loc[i, "protocol_diff"] = "; ".join(reasons) if not comparable else ""
            derived = not rec.is_real and verdict.is_derived(rec)
            key = (exp, rec.fingerprint, derived)
            g = groups.get(key)
            if g is None:
                proto = rec.metrics.get("protocol")
                g = groups[key] = Group(
                    experiment=exp,
                    fingerprint=rec.fingerprint,
                    protocol=_protocol_summary(proto) if isinstance(proto, dict) else {},
                    main=bool(comparable),
                    differences=[] if comparable else list(reasons),
                    derived=derived,
                )
            g.warnings = _dedupe([*g.warnings, *(rec.metrics.get("warnings") or [])])
    ordered = sorted(
        groups.values(),
        key=lambda g: (g.experiment, not g.main, not g.fingerprint, g.fingerprint, g.derived),
    )

    parts = [df for g in ordered for df in _group_rows(g, runs[runs.index.isin(ok)], records)]
    # Unfinished runs were measured under no protocol: they belong to no group's table.
    parts.append(runs[~runs.index.isin(ok)].assign(protocol=None))
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    return Summary(_integers(_order_columns(table)), ordered, failed, variants, records)


def _aggregate(seeds: pd.DataFrame) -> pd.DataFrame:
    out = []
    if seeds.empty:
        return pd.DataFrame()
    for (model, variant), grp in seeds.groupby(["model", "variant"], sort=True, dropna=False):
        grp = grp.sort_values("seed", kind="stable")
        first = grp.iloc[0]
        row: dict[str, Any] = {
            "row": "mean",
            "experiment": first["experiment"],
            "protocol": first["protocol"],
            "model": model,
            "variant": variant,
            "seed": None,
            "n_seeds": len(grp),
            "seeds": ";".join(str(int(s)) for s in grp["seed"] if pd.notna(s)),
            "status": "done",
            "comparable": first.get("comparable"),
            "protocol_diff": first.get("protocol_diff"),
        }
        for c in COLUMNS:
            if c.key not in grp or c.fmt == "str":
                continue
            mean, half, n = t_ci95(pd.to_numeric(grp[c.key], errors="coerce").tolist())
            row[c.key] = mean if n else None
            row[f"{c.key}_ci95"] = half if n else None
        for k in EXTRA_MEANS:
            if k in grp:
                vals = pd.to_numeric(grp[k], errors="coerce").dropna()
                row[k] = float(vals.mean()) if len(vals) else None
        if "pretrained" in grp:
            row["pretrained"] = bool(grp["pretrained"].fillna(False).astype(bool).any())
        for k in ("device", "sampler", "stopped_by"):
            if k in grp:
                row[k] = ", ".join(sorted({str(v) for v in grp[k] if isinstance(v, str) and v}))
        out.append(row)
    return pd.DataFrame(out)


def _group_rows(g: Group, done: pd.DataFrame, records: list[RunRecord]) -> list[pd.DataFrame]:
    """One group's real, mean and per-seed rows, judged and ranked."""
    members = done[(done["experiment"] == g.experiment) & (done["protocol"] == g.fingerprint)]
    real = members[members["row"] == "real"]
    seeds = members[(members["row"] == "run") & (members["derived"].map(is_true) == g.derived)]
    agg = _aggregate(seeds)
    if not agg.empty:
        agg["derived"] = g.derived  # mean rows belong to their group, like their seeds
    real, agg, seeds = _judge(g, records, real, agg, seeds)
    agg = _rank(agg, lead=g.lead)
    _reorder_separation(g, agg)
    # The real-data floor is listed once, with the group of models that sample from noise.
    real = real if not g.derived else real.iloc[0:0]
    return [real, agg, seeds.sort_values(["model", "variant", "seed"], kind="stable")]


def _audit_text(flagged: bool, floor: bool, recs: list[RunRecord] | None = None) -> str:
    if recs and all(verdict.is_derived(r) for r in recs):
        return verdict.derived_text(recs)
    if flagged:
        return "flagged for copying training images"
    return verdict.FLOOR_MARK if floor else ""


def _sampling_cols(row: dict[str, Any], recs: list[RunRecord]) -> None:
    for metric in verdict.BOOT_METRICS:
        ci = verdict.sampling_ci(recs, metric) if recs else None
        row[f"{metric}_ci95_sampling_lo"] = ci[0] if ci else None
        row[f"{metric}_ci95_sampling_hi"] = ci[1] if ci else None


def _judge(
    g: Group,
    records: list[RunRecord],
    real: pd.DataFrame,
    agg: pd.DataFrame,
    seeds: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Copy flags, the floor test, sampling intervals and the separation matrix of a group."""
    ns = pd.to_numeric(seeds["n"], errors="coerce").dropna() if "n" in seeds else pd.Series()
    g.n = int(ns.median()) if len(ns) else None
    g.lead = verdict.lead_metric(g.n)
    real_rec = records[int(real.index[0])] if not real.empty else None
    real, seeds = real.copy(), seeds.copy()
    for df in (real, seeds):
        rows = []
        for i in df.index:
            rec = records[int(i)]
            flagged = verdict.is_flagged(rec)
            floor = not rec.is_real and verdict.at_floor([rec], real_rec)
            row: dict[str, Any] = {"flagged": flagged, "at_floor": floor}
            row["audit"] = _audit_text(flagged, floor, [rec])
            _sampling_cols(row, [rec])
            rows.append(row)
        for k in ("flagged", "at_floor", "audit", *_SAMPLING_KEYS):
            df[k] = [r[k] for r in rows] if rows else []
    if agg.empty:
        return real, agg, seeds
    models: dict[str, list[RunRecord]] = {}
    extra = []
    for _, a in agg.iterrows():
        sel = (seeds["model"] == a["model"]) & (seeds["variant"] == a["variant"])
        recs = [records[int(i)] for i in seeds.index[sel]]
        flagged = any(verdict.is_flagged(r) for r in recs)
        floor = verdict.at_floor(recs, real_rec)
        audit = _audit_text(flagged, floor, recs)
        row = {"flagged": flagged, "at_floor": floor, "audit": audit}
        _sampling_cols(row, recs)
        one = seeds[sel].iloc[0] if len(recs) == 1 else None
        for k in ("copy_rate_ci95_lo", "copy_rate_ci95_hi"):
            # One seed: the audit's own (Wilson) interval of the copy rate.
            row[k] = one.get(k) if one is not None else None
        extra.append(row)
        models[model_label(a) + (f" {verdict.COPY_MARK}" if flagged else "")] = recs
    agg = agg.copy()
    for k in extra[0]:
        agg[k] = [r.get(k) for r in extra]
    g.separation = {m: verdict.separation(models, m) for m in _lead_order(g.lead)}
    g.curves = curves.build(models)
    return real, agg, seeds


def _reorder_separation(g: Group, agg: pd.DataFrame) -> None:
    """The matrix in the table's (ranked) order."""
    order = [model_label(r) for _, r in agg.iterrows()]
    for sep in g.separation.values():
        names = [n for n in order if n in sep["models"]]
        names += [n for n in sep["models"] if n not in names]
        sep["models"] = names
        sep["matrix"] = {m: {c: sep["matrix"][m][c] for c in names} for m in names}


_SAMPLING_KEYS = tuple(f"{m}_ci95_sampling_{e}" for m in verdict.BOOT_METRICS for e in ("lo", "hi"))


def _lead_order(lead: str) -> tuple[str, ...]:
    return ("kid", "fid") if lead == "kid" else ("fid", "kid")


def primary_metric(df: pd.DataFrame, *, lead: str | None = None) -> str | None:
    """The lead metric if it has a value, else the first quality column with one:
    the ranking the report leads with."""
    for k in (*([lead] if lead else []), *QUALITY):
        if k in df and pd.to_numeric(df[k], errors="coerce").notna().any():
            return k
    return None


def flagged_mask(df: pd.DataFrame) -> pd.Series:
    if "flagged" not in df:
        return pd.Series(False, index=df.index)
    return df["flagged"].map(lambda v: v is True or v == 1.0)


def _rank(agg: pd.DataFrame, *, lead: str | None = None) -> pd.DataFrame:
    """Best values per column among the unflagged models; unflagged rows first, by the
    lead metric (flagged runs are listed last, never best)."""
    if agg.empty:
        return agg
    flagged = flagged_mask(agg)
    best: list[list[str]] = [[] for _ in range(len(agg))]
    for c in COLUMNS:
        if c.better is None or c.key not in agg:
            continue
        vals = pd.to_numeric(agg[c.key], errors="coerce").where(~flagged)
        if vals.notna().sum() < 2 or math.isclose(
            vals.min(), vals.max(), rel_tol=1e-9, abs_tol=1e-12
        ):
            continue  # nothing to rank (means of equal values may differ in the last bit)
        top = vals.min() if c.better == "lower" else vals.max()
        for i, v in enumerate(vals):
            if pd.notna(v) and math.isclose(v, top, rel_tol=1e-12, abs_tol=0.0):
                best[i].append(c.key)
    agg = agg.copy()
    agg["best"] = [";".join(b) for b in best]
    key = primary_metric(agg, lead=lead)
    if key is not None:
        sign = 1 if COLUMN[key].better == "lower" else -1
        agg["_flag"] = flagged.astype(int).to_numpy()
        agg["_sort"] = sign * pd.to_numeric(agg[key], errors="coerce")
        agg = agg.sort_values(
            ["_flag", "_sort", "model", "variant"], na_position="last", kind="stable"
        )
        agg = agg.drop(columns=["_sort", "_flag"])
    return agg.reset_index(drop=True)


def _integers(df: pd.DataFrame) -> pd.DataFrame:
    # Counts print as 2, not 2.0, with an empty cell where a row has none.
    for k in ("seed", "n_seeds", "nfe", "n"):
        if k in df:
            v = pd.to_numeric(df[k], errors="coerce")
            if ((v.dropna() % 1) == 0).all():
                df[k] = v.round().astype("Int64")
    return df


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    lead = [c for c in ID_COLUMNS if c in df]
    metrics = []
    for c in COLUMNS:
        if c.key in df:
            metrics.append(c.key)
        if f"{c.key}_ci95" in df:
            metrics.append(f"{c.key}_ci95")
    tail = [c for c in TAIL_COLUMNS if c in df]
    extra = [c for c in EXTRA_MEANS if c in df]
    used = set(lead) | set(metrics) | set(tail) | set(extra)
    rest = sorted(c for c in df.columns if c not in used)
    return df[lead + metrics + extra + rest + tail]
