"""Reading run folders: one :class:`RunRecord` per folder, one flat row per run.

Everything the report shows comes from the folders alone (config.toml,
status.json, metrics.json, train_log.jsonl, snapshots.jsonl, cfg_sweep.json,
samples/), so a copy of a results folder reports the same anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from genbench.config.files import read_toml
from genbench.utils.errors import GenbenchError
from genbench.utils.files import read_json, read_jsonl
from genbench.utils.naming import RUN_ID_DIGITS


@dataclass
class RunRecord:
    """One run folder as read from disk (``path`` is for reading images, never written out)."""

    run_id: str
    path: Path
    status: str
    error: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    model: str | None = None
    seed: int | None = None
    _boot: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def is_real(self) -> bool:
        return self.model == "real"

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def fingerprint(self) -> str:
        proto = self.metrics.get("protocol")
        return str(proto.get("fingerprint") or "") if isinstance(proto, dict) else ""

    def train_log(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "train_log.jsonl")

    def snapshots(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "snapshots.jsonl")

    def bootstrap(self) -> dict[str, Any]:
        """RUN/bootstrap.json (per-replicate FID and KID), {} when absent or unreadable."""
        if self._boot is None:
            boot = self.metrics.get("bootstrap")
            name = boot.get("file") if isinstance(boot, dict) else None
            p = self.path / Path(str(name or "bootstrap.json")).name  # never outside the run
            data, _ = _read_dict(p)
            self._boot = data
        return self._boot

    def cfg_sweep(self) -> list[dict[str, Any]]:
        p = self.path / "cfg_sweep.json"
        try:
            data = read_json(p) if p.is_file() else []
        except ValueError:
            return []
        if isinstance(data, dict):  # tolerate {"records": [...]}
            data = data.get("records") or data.get("points") or []
        return [r for r in data if isinstance(r, dict) and "scale" in r]


#: A real-data row's folder name: ``<experiment>-real-n<N>-<digest>`` (genbench.runs.real).
_REAL_ID = re.compile(rf"(.+)-real-n\d+-[0-9a-f]{{{RUN_ID_DIGITS}}}")


def _read_dict(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        return {}, None
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        return {}, f"{path.name} is unreadable: {exc}"
    return (data, None) if isinstance(data, dict) else ({}, f"{path.name} is not an object")


def read_run(rd: Path) -> RunRecord | None:
    """A run folder (one with config.toml, status.json or metrics.json), else None."""
    if not any((rd / f).is_file() for f in ("config.toml", "status.json", "metrics.json")):
        return None
    status, err_s = _read_dict(rd / "status.json")
    metrics, err_m = _read_dict(rd / "metrics.json")
    config: dict[str, Any] = {}
    err_c = None
    if (rd / "config.toml").is_file():
        try:
            config = read_toml(rd / "config.toml")
        except GenbenchError as exc:
            err_c = str(exc).replace(str(rd.parent), "").lstrip("/")  # keep tables path-free
    rec = RunRecord(
        run_id=rd.name,
        path=rd,
        status=str(status.get("status") or ("done" if metrics else "unknown")),
        error=status.get("error") or err_s or err_m or err_c,
        config=config,
        metrics=metrics,
    )
    # A folder that never got metrics.json or config.toml (a real-data row skipped or failed)
    # says what it is in status.json; older ones only in their name.
    rec.experiment = metrics.get("experiment", config.get("experiment", status.get("experiment")))
    rec.model = metrics.get("model", config.get("model", status.get("model")))
    if rec.model is None and not config and (m := _REAL_ID.fullmatch(rd.name)):
        rec.model, rec.experiment = "real", rec.experiment or m.group(1)
    seed = metrics.get("seed", config.get("seed"))
    rec.seed = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None
    if rec.done and not metrics:
        rec.error = rec.error or "status is done but metrics.json is missing"
    return rec


def load_runs(results_dirs: Sequence[Path] | Path) -> list[RunRecord]:
    """Every run folder directly under the results folder(s), sorted by run id.

    Several folders (the shards of an array job) merge; a run id found twice
    keeps the finished copy (or the first one).
    """
    dirs = [results_dirs] if isinstance(results_dirs, Path) else list(results_dirs)
    if not dirs:
        raise GenbenchError("no results folder given")
    found: dict[str, RunRecord] = {}
    for d in dirs:
        if not d.is_dir():
            raise GenbenchError(f"results folder {d} does not exist")
        for rd in sorted(p for p in d.iterdir() if p.is_dir()):
            rec = read_run(rd)
            if rec is None:
                continue
            old = found.get(rec.run_id)
            if old is None or (not old.done and rec.done):
                found[rec.run_id] = rec
    records = [found[k] for k in sorted(found)]
    grid_copy_flags(records)
    return records


def grid_copy_flags(records: Sequence[RunRecord]) -> None:
    """Family-wise control of copy flags over the runs read together: each audited run's
    p-value of "copied fraction <= tolerance" is adjusted by Holm's step-down method over
    all of them (the real-data row included), and the run is flagged when the adjusted
    value is below its flag_p. Written into each record's ``copies.grid``; folders from
    before the copied-fraction verdict keep their own flag."""
    from genbench.metrics.audit.stats import holm

    audited = []
    for r in records:
        cp = r.metrics.get("copies")
        if r.done and isinstance(cp, dict) and "copied_fraction" in cp:
            p = cp.get("p_value")
            if isinstance(p, (int, float)) and math.isfinite(p):
                audited.append((r, cp, float(p)))
    adjusted = holm([p for _, _, p in audited])
    for (_, cp, _), adj in zip(audited, adjusted, strict=True):
        level = cp.get("flag_p") or 0.01
        cp["grid"] = {"runs": len(audited), "p_holm": adj, "flagged": bool(adj < level)}


# -- flat rows -------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def flatten_scores(scores: dict[str, Any]) -> dict[str, Any]:
    """{"kid": {"mean", "std"}} -> kid, kid_std; other nested dicts -> key_sub."""
    out: dict[str, Any] = {}
    for k, v in scores.items():
        if isinstance(v, dict):
            if "mean" in v:
                out[k] = _num(v.get("mean"))
                if "std" in v:
                    out[f"{k}_std"] = _num(v.get("std"))
            else:
                for k2, v2 in v.items():
                    if _num(v2) is not None:
                        out[f"{k}_{k2}"] = _num(v2)
        elif v is None or isinstance(v, (int, float)):
            out[k] = _num(v)
    return out


def run_row(rec: RunRecord) -> dict[str, Any]:
    """The flat, path-free row of one run."""
    m = rec.metrics
    row: dict[str, Any] = {
        "row": "real" if rec.is_real else "run",
        "experiment": rec.experiment,
        "model": rec.model,
        "seed": rec.seed,
        "status": rec.status,
        "run_id": rec.run_id,
        "error": rec.error,
        "protocol": rec.fingerprint,
        # Made from training images at sampling time, by the model's own declaration: ranked
        # in a group of its own, its copy audit stated rather than a flag.
        "derived": bool(m.get("derived_from_training")),
    }
    if "parameters_total" in m:
        row["params_m"] = _num(m["parameters_total"] / 1e6)
    tr = m.get("train") or {}
    if tr:
        seen = _num(tr.get("images_seen"))
        row["kimg"] = seen / 1000 if seen is not None else None
        row["train_s"] = _num(tr.get("train_seconds"))
        row["train_wall_s"] = _num(tr.get("wall_seconds"))  # with evaluation and checkpoints
        row["train_img_s"] = _num(tr.get("images_per_s"))
        row["train_flops"] = _num(tr.get("flops_total"))
        if row["train_flops"] and seen:
            row["gflop_per_img"] = row["train_flops"] / seen / 1e9
        row["stopped_by"] = tr.get("stopped_by")
        row["reused_from"] = tr.get("reused_from")
        # Scored weights trained elsewhere: no budget, time or FLOPs of this protocol.
        row["pretrained"] = bool(tr.get("pretrained"))
    sm = m.get("sampling") or {}
    if sm:
        row["sampler"] = sm.get("sampler")
        row["nfe"] = _num(sm.get("nfe"))
        row["n"] = _num(sm.get("n"))
        row["sample_img_s"] = _num(sm.get("images_per_s"))
        row["sample_s"] = _num(sm.get("seconds"))
    row["score_s"] = _num((m.get("scoring") or {}).get("seconds"))
    env = m.get("environment") or {}
    row["device"] = env.get("device_name") or env.get("device")
    if rec.is_real:
        row["device"] = None  # the floor row measures data, not a device
    row.update(flatten_scores(m.get("scores") or {}))
    cp = m.get("copies")
    if isinstance(cp, dict):
        grid = cp.get("grid") if isinstance(cp.get("grid"), dict) else {}
        row["flagged"] = bool(grid.get("flagged", cp.get("flagged")))
        row["copy_flagged_by"] = ", ".join(cp.get("flagged_by") or [])
        row.update(_copied_fraction_cols(cp))
        ci = cp.get("rate_ci95")
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            row["copy_rate_ci95_lo"], row["copy_rate_ci95_hi"] = _num(ci[0]), _num(ci[1])
        row["copy_p_value"] = _num(cp.get("p_value"))
        row["copy_heldout_rate"] = _num(cp.get("heldout_rate"))
        if row.get("copy_rate") is None:
            row["copy_rate"] = _num(cp.get("rate"))
    return row


def _copied_fraction_cols(cp: dict[str, Any]) -> dict[str, Any]:
    """The copied-fraction estimates (per sample, membership in each space) and the
    closeness diagnostic, flat."""
    out: dict[str, Any] = {}
    cf = cp.get("copied_fraction")
    if not isinstance(cf, dict):
        return out
    named = {"per_sample": cf.get("per_sample"), **(cf.get("membership") or {})}
    for name, e in named.items():
        if isinstance(e, dict):
            key = f"copied_{name}"
            out[key] = _num(e.get("fraction"))
            ci = e.get("ci95") or [None, None]
            out[f"{key}_ci95_lo"], out[f"{key}_ci95_hi"] = _num(ci[0]), _num(ci[1])
    out["copy_tolerance"] = _num(cp.get("tolerance"))
    closer = cp.get("closer_than_fresh")
    if isinstance(closer, dict):
        out["closer_auc"] = _num(closer.get("auc"))
    grid = cp.get("grid")
    if isinstance(grid, dict):
        out["copy_p_holm"] = _num(grid.get("p_holm"))
    return out


def collect_runs(results_dirs: Sequence[Path] | Path) -> pd.DataFrame:
    """One row per run folder (the real-data row included), sorted by run id."""
    return pd.DataFrame([run_row(r) for r in load_runs(results_dirs)])
