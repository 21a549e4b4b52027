"""Images on disk and in grids: the one tiler every grid genbench writes goes through
(report grids, sample grids, the copy audit's pairs, tracker images) and the one reader of
image files (uint8 arrays and tensors)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genbench.data.sources import IMAGE_EXTENSIONS
from genbench.utils.errors import GenbenchError
from genbench.utils.files import atomic_write, save_png

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
