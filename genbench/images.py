"""Images on disk and in grids: the one tiler every grid genbench writes goes through
(report grids, sample grids, the copy audit's pairs, tracker images), the one reader of
image files (uint8 arrays and tensors), and the grids `genbench sample` renders live from
a trained run (per class, class mixtures, attribute strips; the report's grids of saved
samples are :mod:`genbench.report.grids`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genbench import registry
from genbench.config import read_run_config
from genbench.contract import Generator
from genbench.data import DataBundle, load_data, to_uint8
from genbench.data.sources import IMAGE_EXTENSIONS
from genbench.runs.folder import RunFolder
from genbench.train.checkpoints import latest_checkpoint, restore
from genbench.utils.device import resolve_device
from genbench.utils.errors import CheckpointError, GenbenchError
from genbench.utils.files import atomic_write, save_png
from genbench.utils.naming import slug

#: PIL modes read as grayscale; every other mode is read as RGB.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def tile(images: list[np.ndarray], *, nrow: int, pad: int = 2) -> np.ndarray:
    """Same-size H x W (x C) uint8 arrays -> one grid with white padding, nrow per row.
    Grayscale arrays join colour ones as equal channels."""
    if not images:
        raise ValueError("no images to tile")
    channels = max((a.shape[2] for a in images if a.ndim == 3), default=0)
    arrs = [
        np.repeat(a[..., None], channels, -1) if channels and a.ndim == 2 else a for a in images
    ]
    h, w = arrs[0].shape[:2]
    rows = math.ceil(len(arrs) / nrow)
    shape = (rows * (h + pad) + pad, nrow * (w + pad) + pad) + ((channels,) if channels else ())
    grid = np.full(shape, 255, dtype=np.uint8)
    for i, a in enumerate(arrs):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = a
    return grid


def tile_tensor(images: torch.Tensor, *, nrow: int, pad: int = 2) -> torch.Tensor:
    """uint8 N x C x H x W -> one uint8 C x H x W grid (CPU) with :func:`tile`; the same
    pixels as torchvision's ``make_grid(images / 255, nrow, padding=pad, pad_value=1)``:
    at most N columns, and a single image comes back unpadded."""
    images = images.detach().cpu()
    if len(images) == 1:
        return images[0].clone()
    arrs = [a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy() for a in images]
    grid = torch.from_numpy(tile(arrs, nrow=min(nrow, len(arrs)), pad=pad))
    return grid[None] if grid.ndim == 2 else grid.permute(2, 0, 1).contiguous()


def save_grid(images: torch.Tensor, path: Path, *, nrow: int) -> Path:
    """uint8 N x C x H x W -> one PNG grid (written atomically)."""
    grid = tile_tensor(images, nrow=nrow)
    return atomic_write(path, lambda p: save_png(grid, p))


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise GenbenchError(f"{folder} is not a folder")
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def read_image_arrays(files: list[Path]) -> list[np.ndarray]:
    """Image files -> uint8 arrays: H x W for grayscale modes, H x W x 3 otherwise."""
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append(np.asarray(im.convert("L" if im.mode in GRAY_MODES else "RGB")))
        except OSError as exc:
            raise GenbenchError(f"cannot read image {f}: {exc}") from None
    return out


def read_images(files: list[Path]) -> torch.Tensor:
    """Image files -> uint8 N x C x H x W; C = 1 if every file is grayscale, else 3."""
    if not files:
        raise GenbenchError("no images to score")
    arrs = read_image_arrays(files)
    rgb = any(a.ndim == 3 for a in arrs)
    if rgb:
        arrs = [np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in arrs]
    sizes = {a.shape[:2] for a in arrs}
    if len(sizes) > 1:
        raise GenbenchError(
            f"images differ in size ({sorted(sizes)[:3]}...); score one size at a time"
        )
    t = torch.from_numpy(np.stack(arrs))
    return t.permute(0, 3, 1, 2).contiguous() if rgb else t[:, None].contiguous()


# -- grids sampled live from a trained run (`genbench sample`) ---------------------------
def load_trained_run(run_dir: Path, *, device: str = "auto") -> tuple[Generator, DataBundle]:
    """Rebuild a run's generator from its config.toml and its last checkpoint."""
    if not (run_dir / "config.toml").is_file():
        raise GenbenchError(f"{run_dir} is not a run folder (no config.toml)")
    cfg = read_run_config(run_dir / "config.toml")
    cls = registry.load(cfg.model)
    if cfg.pretrained is not None:  # no checkpoint of its own: load its source again
        from genbench.runs.pretrained import load_pretrained

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
