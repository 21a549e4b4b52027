"""What the summary table holds: its columns in order (quality first, from the metric
units; then cost and info), and the labels of its rows (model, variant, flags)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import genbench.report.verdict as verdict
from genbench.metrics import units
from genbench.report.collect import RunRecord


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


# -- row labels ------------------------------------------------------------------------
PRETRAINED_NOTE = "pretrained: not trained under this protocol"


def is_pretrained(row: pd.Series) -> bool:
    v = row.get("pretrained")
    return isinstance(v, (bool, np.bool_)) and bool(v)  # NaN (older rows) is not a flag


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
