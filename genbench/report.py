"""Collect run folders into one table (summary.csv / summary.md) and a rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from genbench.config import read_toml
from genbench.errors import GenbenchError
from genbench.io import atomic_write, read_json, write_text

# Columns shown first, in this order, when present.
LEADING = [
    "experiment",
    "model",
    "seed",
    "status",
    "fid",
    "kid",
    "isc",
    "precision",
    "recall",
    "params_m",
    "kimg",
    "train_s",
    "train_img_s",
    "gflop_per_img",
    "sampler",
    "nfe",
    "n",
    "sample_img_s",
    "device",
]


def _flatten_scores(scores: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in scores.items():
        if isinstance(v, (int, float)) or v is None:
            out[k] = v
        elif isinstance(v, dict):
            if "mean" in v:
                out[k] = v["mean"]
                if "std" in v:
                    out[f"{k}_std"] = v["std"]
            else:
                for k2, v2 in v.items():
                    if isinstance(v2, (int, float)):
                        out[f"{k}_{k2}"] = v2
    return out


def collect_runs(results_dir: Path) -> pd.DataFrame:
    """One row per run folder (a folder with config.toml or status.json)."""
    if not results_dir.is_dir():
        raise GenbenchError(f"results folder {results_dir} does not exist")
    rows = []
    for rd in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        if not ((rd / "config.toml").exists() or (rd / "status.json").exists()):
            continue
        row: dict[str, Any] = {"run_id": rd.name}
        try:
            status = read_json(rd / "status.json") if (rd / "status.json").exists() else {}
        except ValueError:
            status = {"status": "unreadable"}
        row["status"] = status.get("status", "unknown")
        row["error"] = status.get("error")
        if (rd / "config.toml").exists():
            try:
                cfg = read_toml(rd / "config.toml")
                row.update(
                    experiment=cfg.get("experiment"), model=cfg.get("model"), seed=cfg.get("seed")
                )
            except GenbenchError as exc:
                row["error"] = str(exc)
        if (rd / "metrics.json").exists():
            try:
                m = read_json(rd / "metrics.json")
            except ValueError:
                m = {}
            row.update(
                experiment=m.get("experiment", row.get("experiment")),
                model=m.get("model", row.get("model")),
                seed=m.get("seed", row.get("seed")),
            )
            tr, sm = m.get("train", {}), m.get("sampling", {})
            if "parameters_total" in m:
                row["params_m"] = round(m["parameters_total"] / 1e6, 3)
            if tr:
                row["kimg"] = tr.get("images_seen", 0) / 1000
                row["train_s"] = tr.get("train_seconds")
                row["train_img_s"] = tr.get("images_per_s")
                if tr.get("flops_per_step") and tr.get("steps") and tr.get("images_seen"):
                    per_img = tr["flops_per_step"] * tr["steps"] / tr["images_seen"]
                    row["gflop_per_img"] = round(per_img / 1e9, 3)
            if sm:
                row.update(
                    sampler=sm.get("sampler"),
                    nfe=sm.get("nfe"),
                    n=sm.get("n"),
                    sample_img_s=sm.get("images_per_s"),
                )
            row["device"] = m.get("environment", {}).get("device")
            row.update(_flatten_scores(m.get("scores", {})))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    lead = [c for c in LEADING if c in df.columns]
    rest = [c for c in df.columns if c not in lead]
    return df[lead + rest]


def write_report(results_dir: Path, out_dir: Path | None = None) -> tuple[pd.DataFrame, Path]:
    df = collect_runs(results_dir)
    if df.empty:
        raise GenbenchError(f"no runs found in {results_dir} (run `genbench run` first)")
    out_dir = out_dir or results_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "summary.csv", lambda p: df.to_csv(p, index=False))
    write_text(out_dir / "summary.md", _markdown(df))
    return df, out_dir


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _markdown(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if c not in ("run_id",)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def rich_table(df: pd.DataFrame, *, max_cols: int = 14):
    from rich.table import Table

    table = Table(title="genbench runs", show_lines=False)
    cols = [c for c in df.columns if c not in ("run_id", "error")][:max_cols]
    for c in cols:
        table.add_column(c, overflow="fold")
    for _, r in df.iterrows():
        table.add_row(*[_fmt(r[c]) for c in cols])
    return table
