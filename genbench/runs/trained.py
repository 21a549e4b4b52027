"""`genbench sample`: grids sampled live from a trained run (per class, class mixtures,
attribute strips). The report's grids of saved samples are :mod:`genbench.report.grids`."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from genbench import registry
from genbench.config import read_run_config
from genbench.contract import Generator
from genbench.data import DataBundle, load_data, to_uint8
from genbench.runs.pretrained import load_pretrained
from genbench.storage.checkpoints import latest_checkpoint, restore
from genbench.storage.folder import RunFolder
from genbench.storage.images import save_grid, tile_tensor
from genbench.utils.device import resolve_device
from genbench.utils.errors import CheckpointError, GenbenchError
from genbench.utils.naming import slug


def load_trained_run(run_dir: Path, *, device: str = "auto") -> tuple[Generator, DataBundle]:
    """Rebuild a run's generator from its config.toml and its last checkpoint."""
    if not (run_dir / "config.toml").is_file():
        raise GenbenchError(f"{run_dir} is not a run folder (no config.toml)")
    cfg = read_run_config(run_dir / "config.toml")
    cls = registry.load(cfg.model)
    if cfg.pretrained is not None:  # no checkpoint of its own: load its source again
        bundle = load_data(cfg.data)
        model, _ = load_pretrained(
            cls,
            cfg,
            spec=bundle.spec,
            config=cls.Config.model_validate(cfg.generator),
            device=resolve_device(device),
            train_data=bundle.train,
        )
        return model.eval(), bundle
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet")
    bundle = load_data(cfg.data)
    model = cls(
        spec=bundle.spec,
        config=cls.Config.model_validate(cfg.generator),
        device=resolve_device(device),
        train_data=bundle.train,
    )
    restore(model, ckpt)
    model.eval()
    return model, bundle


def parse_mix(text: str, num_classes: int) -> list[float]:
    """'0,1' (equal weights) or '0:0.7,1:0.3' -> a weight row over classes summing to 1."""
    weights = [0.0] * num_classes
    for part in split_csv(text):
        cls, _, w = part.partition(":")
        try:
            c, wt = int(cls), float(w) if w else 1.0
        except ValueError:
            raise GenbenchError(
                f"--mix {text!r}: expected class indices like 0,1 or 0:0.7,1:0.3"
            ) from None
        if not 0 <= c < num_classes:
            raise GenbenchError(f"--mix {text!r}: class {c} is out of range 0..{num_classes - 1}")
        if wt <= 0:
            raise GenbenchError(f"--mix {text!r}: weights must be positive")
        weights[c] += wt
    total = sum(weights)
    if total == 0:
        raise GenbenchError("--mix needs at least one class")
    return [w / total for w in weights]


def split_csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _class_index(token: str, names: tuple[str, ...]) -> int:
    if token in names:
        return names.index(token)
    try:
        i = int(token)
    except ValueError:
        raise GenbenchError(f"unknown class {token!r} (classes: {', '.join(names)})") from None
    if not 0 <= i < len(names):
        raise GenbenchError(f"class {i} is out of range 0..{len(names) - 1}")
    return i


def _interpolation(
    model: Generator, bundle: DataBundle, attribute: str, *, n: int, seed: int
) -> torch.Tensor:
    """n frames from the first training image's attributes with ``attribute`` swept 0 -> 1."""
    spec = model.spec
    if attribute not in spec.attribute_names:
        raise GenbenchError(
            f"unknown attribute {attribute!r} (attributes: {', '.join(spec.attribute_names)})"
        )
    a = spec.attribute_names.index(attribute)
    assert bundle.train.labels is not None
    base = bundle.train.labels[0].float().clone()
    frames = []
    for v in torch.linspace(0, 1, n):
        vec = base.clone()
        vec[a] = v
        # The same noise seed for every frame, so only the attribute changes.
        frames.append(
            model.sample(
                1, labels=vec[None].to(model.device), generator=torch.Generator().manual_seed(seed)
            )
        )
    return torch.cat(frames)


# params: `genbench sample`'s options, one keyword each
def render_grid(
    run_dir: Path,
    *,
    n: int = 64,
    labels: str | None = None,
    per_class: bool = False,
    mix: list[str] | None = None,
    interpolate: str | None = None,
    seed: int = 0,
    nrow: int | None = None,
    out: Path | None = None,
    device: str = "auto",
) -> Path:
    """`genbench sample`: a grid sampled live from a trained run, saved as a PNG."""
    model, bundle = load_trained_run(run_dir, device=device)
    spec = model.spec
    wants_labels = labels or per_class or mix
    if wants_labels and spec.condition != "classes":
        raise GenbenchError(
            f"{run_dir.name} was trained on data without classes; --labels/--per-class/--mix need classes"
        )
    if interpolate and spec.condition != "attributes":
        raise GenbenchError("--interpolate needs a run trained on attribute-labelled data")
    if interpolate:
        rows = [_interpolation(model, bundle, interpolate, n=n, seed=seed)]
        what, nrow = f"interpolate-{slug(interpolate)}", nrow or n
    else:
        rows, what, full_rows = _sampled_rows(
            model, n=n, labels=labels, per_class=per_class, mix=mix, seed=seed
        )
        nrow = nrow or (n if full_rows else None)
    images = torch.cat([to_uint8(r) for r in rows])
    nrow = nrow or max(1, int(math.sqrt(len(images))))
    if out is not None:
        return save_grid(images, out, nrow=nrow)
    grid = tile_tensor(images, nrow=nrow)
    return RunFolder(run_dir).write_grid(f"{what}-seed{seed}.png", grid)


def _sampled_rows(
    model: Generator,
    *,
    n: int,
    labels: str | None,
    per_class: bool,
    mix: list[str] | None,
    seed: int,
) -> tuple[list[torch.Tensor], str, bool]:
    """The sample batches of a grid, its file-name stem, and whether each batch is a row."""
    names = model.spec.class_names
    g = torch.Generator().manual_seed(seed)
    if per_class:
        rows = [
            model.sample(
                n, labels=torch.full((n,), c, dtype=torch.int64, device=model.device), generator=g
            )
            for c in range(len(names))
        ]
        return rows, "per-class", True
    if mix:
        rows = []
        for m in mix:
            w = torch.tensor(parse_mix(m, len(names)), dtype=torch.float32)
            rows.append(
                model.sample(n, labels=w.expand(n, -1).contiguous().to(model.device), generator=g)
            )
        return rows, "mix-" + "_".join(slug(m) for m in mix), True
    if labels:
        idx = [_class_index(t, names) for t in split_csv(labels)]
        lab = torch.tensor([idx[i % len(idx)] for i in range(n)], dtype=torch.int64)
        rows = [model.sample(n, labels=lab.to(model.device), generator=g)]
        return rows, "labels-" + "_".join(str(i) for i in idx), False
    lab = None
    if model.conditional and model.spec.condition == "classes":
        lab = (torch.arange(n) % len(names)).to(model.device)
    return [model.sample(n, labels=lab, generator=g)], "samples", False
