"""genbench.images: the one tiler gives torchvision make_grid's pixels (the grids written
before it replaced make_grid), and the one reader reads what scoring's reader reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid

from genbench.data import to_uint8
from genbench.storage.images import read_image_arrays, read_images, tile, tile_tensor


def _pil_reader(files: list) -> torch.Tensor:
    # What scoring's own reader (metrics.scoring.load_images) computed before genbench.images.
    pil = []
    for f in files:
        with Image.open(f) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            pil.append(im.convert("L") if gray else im.convert("RGB"))
    rgb = any(im.mode == "RGB" for im in pil)
    t = torch.from_numpy(np.stack([np.asarray(im.convert("RGB") if rgb else im) for im in pil]))
    return t.permute(0, 3, 1, 2).contiguous() if rgb else t[:, None].contiguous()


def _make_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    # What sampling.save_grid and trackers.sample_grid computed before genbench.images.
    grid = make_grid(images.float() / 255.0, nrow=nrow, padding=2, pad_value=1.0)
    return to_uint8(grid[:1] if images.shape[1] == 1 else grid)


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("nrow", [1, 4, 8, 30])
def test_tile_tensor_matches_make_grid(n, channels, nrow):
    g = torch.Generator().manual_seed(n * 100 + channels * 10 + nrow)
    images = torch.randint(0, 256, (n, channels, 6, 5), generator=g, dtype=torch.uint8)
    assert torch.equal(tile_tensor(images, nrow=nrow), _make_grid(images, nrow))


def test_tile_pads_white_and_promotes_gray_to_colour():
    gray, rgb = np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8)
    grid = tile([gray, rgb, gray], nrow=2, pad=1)
    assert grid.shape == (7, 7, 3)
    assert grid[0].min() == 255 and grid[1:3, 1:3].max() == 0
    assert tile([gray], nrow=3, pad=1).shape == (4, 10)


@pytest.mark.parametrize("modes", [("L", "L"), ("RGB", "L"), ("RGBA", "LA"), ("P", "RGB")])
def test_read_images_matches_scorings_reader(tmp_path, modes):
    rng = np.random.default_rng(0)
    files = []
    for i, mode in enumerate(modes):
        im = Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).convert(mode)
        files.append(tmp_path / f"{i}.png")
        im.save(files[-1])
    assert torch.equal(read_images(files), _pil_reader(files))
    assert [a.ndim for a in read_image_arrays(files)] == [
        2 if m in ("L", "LA") else 3 for m in modes
    ]
