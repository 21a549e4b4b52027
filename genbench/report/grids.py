"""Image grids for the report: each model's fixed samples (seed 0), per class for
conditional models, class-mix grids, the copy audit's matched pairs (copies.png;
memorization.png of older runs) from the run folders,
and a grid of real held-out images for reference."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genbench.report.collect import RunRecord
from genbench.report.plots import slug
from genbench.report.stats import Summary
from genbench.storage.images import read_image_arrays, tile
from genbench.utils.files import read_json

#: Images in a model's grid, and per class in a per-class grid.
GRID_N = 64
PER_CLASS_N = 8


@dataclass
class Grid:
    title: str
    path: str  # relative to the report folder
    caption: str = ""
    kind: str = "samples"  # samples | per-class | mix | copies | memorization | real
    row_labels: tuple[str, ...] = ()


def _upscale(grid: np.ndarray, *, min_width: int = 320) -> Image.Image:
    # Tiny images (8x8, 16x16) are enlarged without smoothing so pixels stay visible.
    im = Image.fromarray(grid)
    k = max(1, math.ceil(min_width / max(1, im.width)))
    return im.resize((im.width * k, im.height * k), Image.NEAREST) if k > 1 else im


def _save(grid: np.ndarray, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    _upscale(grid).save(out, format="PNG")


class GridWriter:
    def __init__(self, summary: Summary, out_dir: Path) -> None:
        self.s = summary
        self.out = out_dir
        self.grids: list[Grid] = []
        self.notes: list[str] = []
        self._names: set[str] = set()

    def _rel(self, name: str) -> tuple[Path, str]:
        stem, k = name.removesuffix(".png"), 1
        while name in self._names:  # two labels may share a slug
            k += 1
            name = f"{stem}-{k}.png"
        self._names.add(name)
        return self.out / "grids" / name, f"grids/{name}"

    def write_all(self, *, data: bool = True) -> list[Grid]:
        experiments = sorted({str(r.experiment) for r in self.s.records if r.experiment})
        for exp in experiments:
            # Real images saved in the real-data row's folder need no data access.
            saved = next(
                (
                    r
                    for r in self.s.records
                    if r.is_real and r.experiment == exp and any((r.path / "samples").glob("*.png"))
                ),
                None,
            )
            if saved is not None:
                self._safe(
                    f"real images for {exp}",
                    lambda r=saved, e=exp: self.sample_grids(
                        r, f"{e}: real data", f"{slug(e)}-real", real=True
                    ),
                )
            elif data:
                self._safe(f"real images for {exp}", lambda e=exp: self.real_grid(e))
            else:
                self.notes.append(f"no real-image grid for {exp}: data loading was switched off")
        for rec, label, tag in self._representatives():
            self._safe(
                f"samples of {rec.run_id}",
                lambda r=rec, lab=label, t=tag: self.sample_grids(r, lab, t),
            )
            self._safe(
                f"memorization of {rec.run_id}",
                lambda r=rec, lab=label, t=tag: self.memorization(r, lab, t),
            )
        for rec in self.s.records:
            if rec.done and (rec.path / "copies.png").is_file():
                self._safe(f"copy audit of {rec.run_id}", lambda r=rec: self.copies(r))
        for rec in self.s.records:
            if rec.done:
                self._safe(f"mix grids of {rec.run_id}", lambda r=rec: self.mix_grids(r))
        return self.grids

    def _safe(self, what: str, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # a bad image costs its grid, not the report
            self.notes.append(f"{what}: skipped ({type(exc).__name__}: {exc})")

    def _representatives(self) -> list[tuple[RunRecord, str, str]]:
        """Per (experiment, model, variant): the finished run with the lowest seed."""
        best: dict[tuple[Any, ...], RunRecord] = {}
        for r in self.s.records:
            if not r.done or r.is_real:
                continue
            v = self.s.variants.get(r.run_id, {})
            key = (str(r.experiment), str(r.model), tuple(v.items()))
            cur = best.get(key)
            if cur is None or (r.seed if r.seed is not None else 1 << 30) < (
                cur.seed if cur.seed is not None else 1 << 30
            ):
                best[key] = r
        out = []
        for (exp, model, v), r in sorted(best.items()):
            variant = ", ".join(f"{k}={x}" for k, x in v)
            label = f"{exp}: {model}" + (f" [{variant}]" if variant else "")
            tag = slug(f"{exp}-{model}") + (f"-{slug(variant, limit=40)}" if variant else "")
            out.append((r, label, tag))
        return out

    def sample_grids(self, rec: RunRecord, label: str, tag: str, *, real: bool = False) -> None:
        folder = rec.path / "samples"
        files = sorted(folder.glob("*.png"))
        if not files:
            return
        manifest = (
            read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
        )
        imgs = read_image_arrays(files[:GRID_N])
        path, rel = self._rel(f"{tag}.png")
        _save(tile(imgs, nrow=max(1, int(math.sqrt(len(imgs))))), path)
        what = "" if real else f" (seed {rec.seed})"
        self.grids.append(
            Grid(
                label + what,
                rel,
                f"The first {len(imgs)} images of the "
                + ("real-data row's image set." if real else "fixed sample set."),
                kind="real" if real else "samples",
            )
        )
        labels, names = manifest.get("labels"), manifest.get("class_names") or []
        if not (isinstance(labels, list) and names and all(isinstance(x, int) for x in labels)):
            return
        all_imgs = read_image_arrays(files) if len(files) > GRID_N else imgs
        rows, row_names = [], []
        for c, name in enumerate(names):
            idx = [i for i, y in enumerate(labels[: len(all_imgs)]) if y == c][:PER_CLASS_N]
            if not idx:
                continue
            blank = np.full_like(all_imgs[0], 255)
            rows += [all_imgs[i] for i in idx] + [blank] * (PER_CLASS_N - len(idx))
            row_names.append(str(name))
        if rows:
            path, rel = self._rel(f"{tag}-per-class.png")
            _save(tile(rows, nrow=PER_CLASS_N), path)
            self.grids.append(
                Grid(
                    f"{label} per class{what}",
                    rel,
                    f"Up to {PER_CLASS_N} "
                    + ("images" if real else "samples generated")
                    + " for each class, one row per class.",
                    kind="real" if real else "per-class",
                    row_labels=tuple(row_names),
                )
            )

    def copies(self, rec: RunRecord) -> None:
        """RUN/copies.png (rows of sample | matched training image, copies first) with
        the audit's rate, interval, flag and the matched pairs' transforms."""
        cp = rec.metrics.get("copies")
        cp = cp if isinstance(cp, dict) else {}
        name = Path(str(cp.get("image") or "copies.png")).name
        src = rec.path / name
        if not src.is_file():
            return
        who = "real held-out images" if rec.is_real else f"{rec.model} seed {rec.seed}"
        path, rel = self._rel(f"{slug(f'{rec.experiment}-{rec.run_id}')}-copies.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        self.grids.append(
            Grid(
                f"{rec.experiment}: copy audit of {who}"
                + (" ⚠ FLAGGED for copying" if cp.get("flagged") else ""),
                rel,
                copies_caption(cp),
                kind="copies",
                row_labels=tuple(pair_label(p) for p in _pairs(cp)),
            )
        )

    def memorization(self, rec: RunRecord, label: str, tag: str) -> None:
        src = rec.path / "memorization.png"
        if (rec.path / "copies.png").is_file() or not src.is_file():
            return  # the copy audit replaces the old memorization pairs
        path, rel = self._rel(f"{tag}-memorization.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        rate = (rec.metrics.get("scores") or {}).get("memorization")
        self.grids.append(
            Grid(
                f"{label}: nearest training images (seed {rec.seed})",
                rel,
                "The samples closest to a training image, each beside its nearest neighbours"
                + (f"; memorization rate {rate:.3g}" if isinstance(rate, (int, float)) else "")
                + ".",
                kind="memorization",
            )
        )

    def mix_grids(self, rec: RunRecord) -> None:
        for src in sorted((rec.path / "grids").glob("mix-*.png")):
            path, rel = self._rel(f"{slug(rec.run_id, limit=80)}-{slug(src.stem)}.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, path)
            self.grids.append(
                Grid(
                    f"{rec.experiment}: {rec.model} class mix {src.stem.removeprefix('mix-')} (seed {rec.seed})",
                    rel,
                    "Written by `genbench sample --mix`: each row one class mixture.",
                    kind="mix",
                )
            )

    def real_grid(self, experiment: str) -> None:
        """Held-out images of the experiment's data, loaded from a run's [data] config."""
        from genbench.config import DataConfig
        from genbench.data import load_data

        rec = next(
            (r for r in self.s.records if r.experiment == experiment and r.config.get("data")),
            None,
        )
        if rec is None:
            self.notes.append(
                f"no real-image grid for {experiment}: no run folder records its data config"
            )
            return
        try:
            cfg = DataConfig.model_validate(rec.config["data"])
            bundle = load_data(cfg)
        except Exception as exc:  # the data may simply not be on this machine
            self.notes.append(
                f"no real-image grid for {experiment}: the data could not be loaded here "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            )
            return
        recorded = (rec.metrics.get("data") or {}).get("holdout_index_sha256")
        if recorded and recorded != bundle.split.get("holdout_index_sha256"):
            self.notes.append(
                f"real-image grid for {experiment}: the held-out split loaded here differs from the one the runs recorded"
            )
        hold = bundle.holdout
        imgs = hold.images.permute(0, 2, 3, 1).numpy()
        arrs = [a[..., 0] if a.shape[-1] == 1 else a for a in imgs]
        names = bundle.spec.class_names
        row_names: tuple[str, ...] = ()
        if hold.labels is not None and names and hold.labels.dtype.is_floating_point is False:
            rows, kept = [], []
            for c, name in enumerate(names):
                idx = (hold.labels == c).nonzero().flatten()[:PER_CLASS_N].tolist()
                if idx:
                    blank = np.full_like(arrs[0], 255)
                    rows += [arrs[i] for i in idx] + [blank] * (PER_CLASS_N - len(idx))
                    kept.append(str(name))
            grid, row_names = tile(rows, nrow=PER_CLASS_N), tuple(kept)
            caption = f"Held-out images, up to {PER_CLASS_N} per class, one row per class."
        else:
            sel = arrs[:GRID_N]
            grid = tile(sel, nrow=max(1, int(math.sqrt(len(sel)))))
            caption = f"The first {len(sel)} held-out images (the scoring reference split)."
        path, rel = self._rel(f"{slug(experiment)}-real.png")
        _save(grid, path)
        self.grids.append(
            Grid(f"{experiment}: real data", rel, caption, kind="real", row_labels=row_names)
        )


def _pairs(cp: dict[str, Any]) -> list[dict[str, Any]]:
    pairs = cp.get("pairs")
    return [p for p in pairs if isinstance(p, dict)] if isinstance(pairs, list) else []


def _f(v: Any, spec: str = ".3g") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def pair_label(p: dict[str, Any]) -> str:
    """One row of copies.png: "sample 3 ~ training 1204 (mirror, shift (+1, -2) px), NCC 0.99; copy"."""
    text = f"sample {p.get('sample', '?')} ~ training {p.get('train_index', '?')}"
    if p.get("transform"):
        text += f" ({p['transform']})"
    text += f", NCC {_f(p.get('ncc'))}"
    if isinstance(p.get("ratio"), (int, float)):
        text += f", ratio {_f(p.get('ratio'))}"
    return text + ("; copy" if p.get("copy") else "")


def copies_caption(cp: dict[str, Any]) -> str:
    """The audit's numbers in one sentence (rate, Wilson interval, held-out rate, test)."""
    if not cp:
        return "Each sample beside its matched training image."
    rate, ci = cp.get("rate"), cp.get("rate_ci95")
    text = f"Copy rate {_f(rate)}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        text += f" [{_f(ci[0])}, {_f(ci[1])}]"
    text += f" ({cp.get('n_copies', '?')} of {cp.get('n_samples', '?')} samples)"
    if "heldout_rate" in cp:
        text += f"; held-out real images: {_f(cp.get('heldout_rate'))}"
    if "p_value" in cp:
        text += f"; p = {_f(cp.get('p_value'))} against the held-out rate"
    text += "; flagged" if cp.get("flagged") else "; not flagged"
    text += ". Rows: sample | matched training image, copies first."
    return text


def write_grids(
    summary: Summary, out_dir: Path, *, data: bool = True
) -> tuple[list[Grid], list[str]]:
    w = GridWriter(summary, out_dir)
    grids = w.write_all(data=data)
    return grids, w.notes
