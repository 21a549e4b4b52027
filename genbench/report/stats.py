"""The summary: per-run rows, mean ± 95% CI over training seeds per model, the
real-data floor on top, best values marked, and rows measured under different
protocols kept in separate, labelled groups.

Output formats (Markdown, LaTeX, rich) render the same :class:`DisplayTable`s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import genbench.report.verdict as verdict
from genbench.metrics import units
from genbench.metrics.protocol import COMPARABLE_KEYS, mark_comparable
from genbench.report.collect import RunRecord, run_row


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    better: str | None  # "lower", "higher" or None (not ranked)
    kind: str  # "quality", "cost" or "info"
    fmt: str = "g"  # g: 4 significant digits; sci: 1.23e+10; int; str


def _quality_columns() -> tuple[Column, ...]:
    """The metric units' table columns (genbench.metrics.units), in registration order."""
    return tuple(
        Column(c.key, c.label, c.better, "quality", c.fmt) for c in units.columns() if c.table
    )


#: The table's columns, in order. Quality first (the metric units' columns): the question
#: is "which is better".
COLUMNS: tuple[Column, ...] = (
    *_quality_columns(),
    Column("memorization", "memorization", "lower", "quality"),  # old runs without copy_rate
    Column("params_m", "params (M)", "lower", "cost"),
    Column("kimg", "kimg seen", None, "cost"),
    Column("train_s", "train time (s)", "lower", "cost"),
    Column("train_flops", "train FLOPs", "lower", "cost", "sci"),
    Column("nfe", "NFE", "lower", "cost", "int"),
    Column("sample_img_s", "sample img/s", "higher", "cost", "sci"),
    Column("device", "device", None, "info", "str"),
    Column("audit", "audit", None, "info", "str"),
)
COLUMN = {c.key: c for c in COLUMNS}
QUALITY = tuple(c.key for c in COLUMNS if c.kind == "quality")
#: Columns plotted against the classifier-free guidance scale.
GUIDANCE = tuple(c.key for c in units.columns() if c.guidance)
#: Numeric columns averaged over seeds without an interval of their own.
EXTRA_MEANS = (
    *(c.key for c in units.columns() if not c.table),
    "train_img_s",
    "gflop_per_img",
    "kid_std",
    "isc_std",
    "memorization_pixel",
    "copy_p_value",
    "copy_heldout_rate",
    "n",
)
ID_COLUMNS = (
    "row",
    "experiment",
    "protocol",
    "model",
    "variant",
    "seed",
    "n_seeds",
    "seeds",
    "status",
)
TAIL_COLUMNS = (
    "pretrained",
    "sampler",
    "stopped_by",
    "reused_from",
    "comparable",
    "protocol_diff",
    "flagged",
    "at_floor",
    "best",
    "run_id",
    "error",
)
CONFIG_IGNORED = ("experiment", "model", "seed")

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


# -- configs and variants --------------------------------------------------------------
def flatten_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if not prefix and k in CONFIG_IGNORED:
            continue
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{key}."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else str(v)
    return out


def short_key(key: str) -> str:
    return key.removeprefix("generator.")


def varying_keys(configs: list[dict[str, str]]) -> list[str]:
    """Config keys whose value is not the same in every config (a missing key counts)."""
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({c.get(k) for c in configs}) > 1]


def assign_variants(records: list[RunRecord]) -> dict[str, dict[str, str]]:
    """run_id -> {short key: value} of the config keys that vary among the finished
    runs of one (experiment, model, protocol): sweep points and other settings, never
    the seed. (Settings that change the protocol, such as sample.n, already separate
    the groups and are named in the group's note.)"""
    by_model: dict[tuple[Any, ...], list[RunRecord]] = {}
    for r in records:
        if not r.is_real:
            by_model.setdefault((r.experiment, r.model, r.fingerprint), []).append(r)
    out: dict[str, dict[str, str]] = {}
    for recs in by_model.values():
        flat = {r.run_id: flatten_config(r.config) for r in recs if r.config}
        basis = [flat[r.run_id] for r in recs if r.done and r.run_id in flat] or list(flat.values())
        keys = varying_keys(basis) if len(basis) > 1 else []
        for r in recs:
            cfg = flat.get(r.run_id, {})
            out[r.run_id] = {short_key(k): cfg.get(k, "-") for k in keys}
    return out


def variant_text(v: dict[str, str]) -> str:
    return ", ".join(f"{k}={val}" for k, val in v.items())


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

    @property
    def key(self) -> tuple[str, str, bool]:
        return self.experiment, self.fingerprint, self.derived

    @property
    def title(self) -> str:
        if not self.fingerprint:
            return f"{self.experiment}: not scored"
        extra = ", derived from training images (by design)" if self.derived else ""
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


def summarize(records: list[RunRecord]) -> Summary:
    """Group, aggregate and rank the runs (see :data:`CI_NOTE`)."""
    variants = assign_variants(records)
    rows = []
    for r in records:
        row = run_row(r)
        row["variant"] = variant_text(variants.get(r.run_id, {}))
        rows.append(row)
    runs = pd.DataFrame(rows)
    failed = [
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


def _flags(df: pd.DataFrame) -> pd.Series:
    if "flagged" not in df:
        return pd.Series(False, index=df.index)
    return df["flagged"].map(lambda v: v is True or v == 1.0)


def _rank(agg: pd.DataFrame, *, lead: str | None = None) -> pd.DataFrame:
    """Best values per column among the unflagged models; unflagged rows first, by the
    lead metric (flagged runs are listed last, never best)."""
    if agg.empty:
        return agg
    flagged = _flags(agg)
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


# -- display tables ----------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    best: bool = False


@dataclass
class DisplayTable:
    title: str
    columns: list[Column]
    header: list[str]  # "model", "seeds", then the columns' labels
    rows: list[list[Cell]]
    kinds: list[str]  # "real", "mean" or "run" per row
    note: str = ""


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v))


def fmt_value(v: Any, fmt: str = "g") -> str:
    if _missing(v):
        return ""
    if fmt == "str" or isinstance(v, str):
        return str(v)
    v = float(v)
    if fmt == "int" and v == int(v):
        return str(int(v))
    if fmt == "sci":
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.2e}"
    return f"{v:.4g}"


def fmt_ci(half: Any, fmt: str = "g") -> str:
    h = float(half)
    if fmt == "sci":
        return fmt_value(h, "sci")
    if h >= 10:
        return f"{h:.0f}"  # "± 102", not "± 1e+02"
    return f"{h:#.2g}" if h >= 1e-3 else f"{h:.1e}"  # two digits: "5.0", "0.19"


#: Columns a pretrained run (weights trained elsewhere) has no value for under this protocol.
NOT_TRAINED_HERE = ("kimg", "train_s", "train_flops")
PRETRAINED_NOTE = "pretrained: not trained under this protocol"


def is_pretrained(row: pd.Series) -> bool:
    v = row.get("pretrained")
    return isinstance(v, (bool, np.bool_)) and bool(v)  # NaN (older rows) is not a flag


def _bracket(row: pd.Series, key: str) -> str:
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if _missing(lo) or _missing(hi):
        return ""
    return f"[{fmt_value(lo)}, {fmt_value(hi)}]"


def cell_text(row: pd.Series, col: Column, *, with_ci: bool) -> str:
    """The value with its interval: ± the seed interval (mean rows of >= 2 seeds); with one
    seed (and on per-seed rows) the bootstrap interval "[lo, hi] sampling only" for FID
    and KID, the Wilson interval for the copy rate; "± n/a" where there is none."""
    if col.key in NOT_TRAINED_HERE and is_pretrained(row):
        return "n/a"
    v = row.get(col.key)
    text = fmt_value(v, col.fmt)
    if not text or not with_ci or col.fmt == "str":
        return text
    half = row.get(f"{col.key}_ci95")
    n = row.get("n_seeds")
    if not _missing(half) and half > 0:
        return f"{text} ± {fmt_ci(half, col.fmt)}"
    one_seed = row.get("row") == "run" or (not _missing(n) and int(n) < 2)
    if col.key in verdict.BOOT_METRICS and (b := _bracket(row, f"{col.key}_ci95_sampling")):
        return f"{text} {b} {verdict.SAMPLING_ONLY}" if one_seed else text
    if col.key == "copy_rate" and (b := _bracket(row, "copy_rate_ci95")):
        return f"{text} {b}" if one_seed else text
    if col.kind == "quality" and one_seed and row.get("row") != "run":
        return f"{text} ± n/a"
    return text


def model_label(row: pd.Series) -> str:
    v = row.get("variant")
    name = str(row.get("model"))
    if row.get("row") == "real":
        return "real data (floor)"
    label = f"{name} [{v}]" if isinstance(v, str) and v else name
    if is_pretrained(row):
        label = f"{label} ({PRETRAINED_NOTE})"
    return f"{label} {verdict.COPY_MARK}" if is_true(row.get("flagged")) else label


def is_true(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_)) and bool(v)


def _present(df: pd.DataFrame) -> list[Column]:
    out = []
    for c in COLUMNS:
        if c.key not in df:
            continue
        col = df[c.key]
        if c.fmt == "str":
            if col.map(lambda x: isinstance(x, str) and bool(x)).any():
                out.append(c)
        elif pd.to_numeric(col, errors="coerce").notna().any():
            out.append(c)
    return out


def display_table(summary: Summary, group: Group, *, per_seed: bool = False) -> DisplayTable:
    """The rows of one group: the real row, then per-model means (or the per-seed rows)."""
    real = summary.rows(group, "real")
    body = summary.rows(group, "run" if per_seed else "mean")
    df = pd.concat([p for p in (real, body) if not p.empty], ignore_index=True)
    cols = _present(df)
    if group.lead == "kid":  # small N: KID (unbiased) first, FID beside it
        cols.sort(key=lambda c: {"kid": 0, "fid": 1}.get(c.key, 2))
    header = ["model", "seed" if per_seed else "seeds", *(c.label for c in cols)]
    rows, kinds = [], []
    for _, r in df.iterrows():
        kind = str(r["row"])
        best = set(str(r.get("best") or "").split(";")) if kind == "mean" else set()
        if kind == "real":
            seeds = ""
        elif per_seed:
            seeds = fmt_value(r.get("seed"), "int")
        else:
            seeds = fmt_value(r.get("n_seeds"), "int")
        cells = [Cell(model_label(r)), Cell(seeds)]
        for c in cols:
            with_ci = kind == "mean" or (
                kind == "run" and c.key in (*verdict.BOOT_METRICS, "copy_rate")
            )
            cells.append(Cell(cell_text(r, c, with_ci=with_ci), best=c.key in best))
        rows.append(cells)
        kinds.append(kind)
    note = ""
    if not group.main and group.fingerprint:
        note = "NOT comparable with this experiment's main table: " + "; ".join(
            group.differences[:4]
        )
    title = group.title + (" (per seed)" if per_seed else "")
    return DisplayTable(title, cols, header, rows, kinds, note)


def arrow(col: Column | None, *, style: str = "unicode") -> str:
    if col is None or col.better is None:
        return ""
    if style == "latex":
        return r" $\downarrow$" if col.better == "lower" else r" $\uparrow$"
    return " ↓" if col.better == "lower" else " ↑"


def headline(summary: Summary, group: Group) -> str:
    """One sentence that answers "which is better, by how much, at what cost": the
    unflagged models ranked on the group's lead metric, the flagged ones named, and the
    claim the separation matrix supports about the top two."""
    agg = summary.rows(group, "mean")
    key = primary_metric(agg, lead=group.lead) if not agg.empty else None
    if key is None:
        return ""
    col = COLUMN[key]
    agg = agg[pd.to_numeric(agg[key], errors="coerce").notna()]
    flagged = agg[_flags(agg)]
    agg = agg[~_flags(agg)]
    parts = []
    shown = 3
    for _, r in agg.head(shown).iterrows():
        cost = []
        if pd.notna(r.get("train_s")):
            cost.append(f"{fmt_value(r['train_s'])} s training")
        if pd.notna(r.get("nfe")):
            cost.append(f"{fmt_value(r['nfe'], 'int')} NFE")
        beside = ""
        if key == "kid" and "fid" in r and not _missing(r.get("fid")):
            beside = f", FID {fmt_value(r['fid'])}"
        floor = f", {verdict.FLOOR_MARK}" if is_true(r.get("at_floor")) else ""
        parts.append(
            f"{model_label(r)} {cell_text(r, col, with_ci=True)}{beside}"
            + (f" ({', '.join(cost)})" if cost else "")
            + floor
        )
    more = f"; {len(agg) - shown} more in the table" if len(agg) > shown else ""
    lead = f"{col.label} ({col.better} is better"
    lead += ", unbiased at this small N; FID beside it)" if key == "kid" else ")"
    text = f"{lead}: " + ("; ".join(parts) or "no unflagged model") + more
    real = summary.rows(group, "real")
    if not real.empty and pd.notna(real.iloc[0].get(key)):
        text += f". Real-data floor: {fmt_value(real.iloc[0][key])}"
    if len(agg) >= 2:
        text += ". " + _top_two_claim(group, agg, key)
    if not flagged.empty:
        names = []
        for _, r in flagged.iterrows():
            rate = r.get("copy_rate")
            names.append(
                model_label(r) + (f" (copy rate {fmt_value(rate)})" if not _missing(rate) else "")
            )
        text += ". Flagged for copying training images, not ranked: " + ", ".join(names)
    if group.derived:
        audits = [f"{model_label(r)}: {r['audit']}" for _, r in agg.iterrows() if r.get("audit")]
        text = f"Ranked apart: {verdict.DERIVED_NOTE}. {text}"
        text += (". " + "; ".join(audits)) if audits else ""
    return text + "."


def _top_two_claim(group: Group, agg: pd.DataFrame, key: str) -> str:
    a, b = model_label(agg.iloc[0]), model_label(agg.iloc[1])
    sep = group.separation.get(key)
    pair = None
    if sep:
        pair = next(
            (p for p in sep["pairs"] if {p["a"], p["b"]} == {a, b}),
            None,
        )
    if pair is None or pair["verdict"] == verdict.NOT_SEPARATED:
        return f"{a} and {b}: not separated"
    return str(pair["claim"])


def separation_markdown(group: Group) -> str:
    """The separation matrix on the group's lead metric: row vs column."""
    sep = group.separation.get(group.lead)
    if not sep or len(sep["models"]) < 2:
        return ""
    names = sep["models"]
    out = [
        f"Separation on {COLUMN[sep['metric']].label} (row vs column; 'beats' needs the "
        "training-seed interval and the paired bootstrap to agree):",
        "",
        "| | " + " | ".join(_md(n) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for m in names:
        out.append(
            f"| {_md(m)} | " + " | ".join(_md(sep["matrix"][m][c] or "·") for c in names) + " |"
        )
    return "\n".join(out) + "\n"


def to_markdown(tables: list[DisplayTable]) -> str:
    out = []
    for t in tables:
        out.append(f"### {t.title}\n")
        if t.note:
            out.append(f"> {t.note}\n")
        cols: list[Column | None] = [None, None, *t.columns]
        head = [h + arrow(c) for h, c in zip(t.header, cols, strict=True)]
        out.append("| " + " | ".join(_md(h) for h in head) + " |")
        out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for cells in t.rows:
            out.append(
                "| "
                + " | ".join(
                    f"**{_md(c.text)}**" if c.best and c.text else _md(c.text) for c in cells
                )
                + " |"
            )
        out.append("")
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex_cell(text: str, best: bool) -> str:
    s = tex_escape(text).replace(" ± ", r" $\pm$ ").replace("±", r"$\pm$")
    return rf"\textbf{{{s}}}" if best and text else s


def to_latex(tables: list[DisplayTable]) -> str:
    out = [
        "% genbench report tables; needs \\usepackage{booktabs}.",
        "% " + CI_NOTE,
        "",
    ]
    for t in tables:
        cols: list[Column | None] = [None, None, *t.columns]
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\caption{{{tex_escape(t.title)}{'. ' + tex_escape(t.note) if t.note else ''}}}",
            r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}",
            r"\toprule",
            " & ".join(
                tex_escape(h) + arrow(c, style="latex") for h, c in zip(t.header, cols, strict=True)
            )
            + r" \\",
            r"\midrule",
        ]
        for i, (cells, kind) in enumerate(zip(t.rows, t.kinds, strict=True)):
            out.append(" & ".join(_tex_cell(c.text, c.best) for c in cells) + r" \\")
            if kind == "real" and i + 1 < len(t.rows):
                out.append(r"\midrule")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def rich_tables(tables: list[DisplayTable], *, max_transposed: int = 6) -> list[Any]:
    """Terminal tables. Few models: one column per model (fits 80 columns); many:
    one row per model, quality and cost in two tables."""
    from rich.markup import escape
    from rich.table import Table

    def styled(c: Cell) -> str:
        return f"[bold green]{escape(c.text)}[/]" if c.best and c.text else escape(c.text)

    out = []
    for t in tables:
        caption = escape(t.note) if t.note else None
        if len(t.rows) <= max_transposed:
            table = Table(title=escape(t.title), caption=caption)
            table.add_column("model (seeds)", no_wrap=True)
            for cells, kind in zip(t.rows, t.kinds, strict=True):
                name = cells[0].text + (f" ({cells[1].text})" if cells[1].text else "")
                table.add_column(
                    escape(name), justify="right", style="dim" if kind == "real" else None
                )
            for j, col in enumerate(t.columns, start=2):
                table.add_row(escape(col.label + arrow(col)), *[styled(r[j]) for r in t.rows])
            out.append(table)
            continue
        for kind_name in ("quality", "cost"):
            idx = [
                j
                for j, c in enumerate(t.columns, start=2)
                if c.kind == kind_name or (kind_name == "cost" and c.kind == "info")
            ]
            if not idx:
                continue
            table = Table(title=escape(f"{t.title}: {kind_name}"), caption=caption)
            table.add_column("model", no_wrap=True)
            table.add_column("seeds")
            for j in idx:
                col = t.columns[j - 2]
                table.add_column(escape(col.label + arrow(col)), justify="right")
            for cells, kind in zip(t.rows, t.kinds, strict=True):
                table.add_row(
                    *[styled(cells[j]) for j in (0, 1, *idx)],
                    style="dim" if kind == "real" else None,
                )
            out.append(table)
    return out
