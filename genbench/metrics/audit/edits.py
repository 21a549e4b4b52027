"""Edits of images that a copier could apply to training images, as tensors.

One set of functions serves two jobs: the copy descriptor trains to be blind to them
(:func:`random_attack`, every family at random strengths), and the tests and the
documentation's detection table apply each family at a stated strength (:func:`apply`).

Images are float N x 1 x H x W in [0, 1] (the audit's canonical form) unless stated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: The named edit families with a strength parameter (see :func:`apply`).
FAMILIES = ("shift", "diagonal", "rotate", "zoom", "erase", "blend", "mosaic", "noise", "flip")


def affine(
    x: torch.Tensor,
    *,
    angle_deg: torch.Tensor,
    scale: torch.Tensor,
    shift_px: torch.Tensor,
    padding: str = "zeros",
) -> torch.Tensor:
    """Rotate (degrees), zoom (>1 enlarges) and shift (N x 2 pixels, x then y) each image."""
    n, _, h, w = x.shape
    a = angle_deg.to(x) * math.pi / 180
    s = scale.to(x)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    # grid coordinates run over [-1, 1]: one pixel is 2 / side; output(p) = input(theta p)
    theta[:, 0, 2] = -shift_px[:, 0].to(x) * 2 / w
    theta[:, 1, 2] = -shift_px[:, 1].to(x) * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def shift_int(x: torch.Tensor, dx: int, dy: int, *, fill: float = 0.0) -> torch.Tensor:
    """An exact integer shift, the uncovered border filled with ``fill``."""
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def erase(x: torch.Tensor, *, size: int, gen: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """A size x size square at a random place in each image set to ``fill``."""
    h, w = x.shape[-2:]
    y0 = torch.randint(0, h - size + 1, (len(x), 1, 1, 1), generator=gen).to(x.device)
    x0 = torch.randint(0, w - size + 1, (len(x), 1, 1, 1), generator=gen).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, 1, -1, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, -1)
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return torch.where(inside, torch.full_like(x, fill), x)


def mosaic(
    x: torch.Tensor, other: torch.Tensor, *, keep: float = 0.5, axis: int = -1
) -> torch.Tensor:
    """The first ``keep`` of each image along ``axis`` (-1 columns, -2 rows), the rest of ``other``."""
    side = x.shape[axis]
    cut = max(1, min(side - 1, round(side * keep)))
    idx = torch.arange(side, device=x.device)
    mask = (idx < cut).to(x.dtype)
    mask = mask.view(1, 1, 1, -1) if axis == -1 else mask.view(1, 1, -1, 1)
    return x * mask + other * (1 - mask)


def apply(
    x: torch.Tensor,
    family: str,
    strength: float,
    *,
    gen: torch.Generator,
    others: torch.Tensor | None = None,
) -> torch.Tensor:
    """One edit family at one strength, a random direction per image (seeded by ``gen``).

    shift: pixels along a random axis and sign (black fill); diagonal: pixels along both
    axes; rotate: degrees, random sign; zoom: scale factor (1.15 enlarges and crops, 0.85
    shrinks with a black border); erase: side of a black square; blend: weight of the
    image (the rest is ``others``); mosaic: share kept of the image (the rest from
    ``others``, a random axis); noise: Gaussian sigma; flip: mirror (strength ignored).
    """
    n = len(x)
    sign = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    if family in ("shift", "diagonal"):
        s = round(strength)
        out = []
        axes = torch.randint(0, 2, (n,), generator=gen).tolist()
        sy = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).tolist()
        for i in range(n):
            d = int(sign[i]) * s
            if family == "diagonal":
                dx, dy = d, sy[i] * s
            else:
                dx, dy = (d, 0) if axes[i] == 0 else (0, d)
            out.append(shift_int(x[i : i + 1], dx, dy))
        return torch.cat(out)
    if family == "rotate":
        zero = torch.zeros(n)
        return affine(x, angle_deg=sign * strength, scale=zero + 1, shift_px=torch.zeros(n, 2))
    if family == "zoom":
        zero = torch.zeros(n)
        return affine(x, angle_deg=zero, scale=zero + strength, shift_px=torch.zeros(n, 2))
    if family == "erase":
        return erase(x, size=int(strength), gen=gen)
    if family in ("blend", "mosaic"):
        if others is None:
            raise ValueError(f"the {family} edit needs other images")
        if family == "blend":
            return strength * x + (1 - strength) * others
        axis = -1 if torch.rand((), generator=gen) < 0.5 else -2
        return mosaic(x, others, keep=strength, axis=axis)
    if family == "noise":
        return (x + strength * torch.randn(x.shape, generator=gen).to(x)).clamp(0, 1)
    if family == "flip":
        return x.flip(-1)
    raise ValueError(f"unknown edit family {family!r} (known: {', '.join(FAMILIES)})")


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A 5-tap Gaussian blur with a sigma per image."""
    t = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.to(x)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # N x 5
    n, c, h, w = x.shape
    y = F.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="replicate")
    kx = k.repeat_interleave(c, 0)[:, None, None, :]
    ky = k.repeat_interleave(c, 0)[:, None, :, None]
    y = F.conv2d(F.conv2d(y, kx, groups=n * c), ky, groups=n * c)
    return y.reshape(n, c, h, w)


def random_attack(x: torch.Tensor, *, gen: torch.Generator, max_shift: float) -> torch.Tensor:
    """Every family at once at random strengths: what the copy descriptor learns to undo.

    Mixing (blends and two-image mosaics, the image keeping the larger share), then
    geometry (shifts up to ``max_shift`` px, rotations up to 15 degrees, zoom 0.8-1.25,
    flips), occlusion (erasing), photometry (brightness, contrast, gamma, blur, noise).
    """
    n, dev = len(x), x.device

    def u(lo: float, hi: float, size: tuple[int, ...] = ()) -> torch.Tensor:
        return (torch.rand((n, *size), generator=gen) * (hi - lo) + lo).to(dev)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) < p).to(dev)

    other = x[torch.randperm(n, generator=gen).to(dev)]
    lam = u(0.45, 0.85)[:, None, None, None]
    blend = coin(0.25)[:, None, None, None]
    x = torch.where(blend, lam * x + (1 - lam) * other, x)
    mos = coin(0.2)
    if mos.any():
        keep = float(u(0.5, 0.75)[0])
        axis = -1 if torch.rand((), generator=gen) < 0.5 else -2
        x = torch.where(mos[:, None, None, None], mosaic(x, other, keep=keep, axis=axis), x)

    geo = coin(0.85).float()
    angle = u(-15, 15) * coin(0.6).float() * geo
    scale = torch.exp(u(math.log(0.8), math.log(1.25)) * coin(0.6).float() * geo)
    shift = u(-max_shift, max_shift, (2,)) * geo[:, None]
    pad = "zeros" if torch.rand((), generator=gen) < 0.7 else "border"
    x = affine(x, angle_deg=angle, scale=scale, shift_px=shift, padding=pad)
    x = torch.where(coin(0.5)[:, None, None, None], x.flip(-1), x)
    x = torch.where(coin(0.1)[:, None, None, None], x.flip(-2), x)

    if torch.rand((), generator=gen) < 0.35:
        size = int(torch.randint(2, max(3, x.shape[-1] // 3) + 1, (), generator=gen))
        x = erase(x, size=size, gen=gen, fill=float(torch.rand((), generator=gen)))

    x = x.clamp(0, 1)
    gamma = torch.exp(u(-0.4, 0.4))[:, None, None, None]
    x = x.clamp_min(1e-4) ** gamma
    contrast = u(0.6, 1.4)[:, None, None, None]
    bright = u(-0.25, 0.25)[:, None, None, None]
    x = (x - 0.5) * contrast + 0.5 + bright
    x = torch.where(coin(0.3)[:, None, None, None], _blur(x, u(0.4, 1.2)), x)
    x = x + torch.randn(x.shape, generator=gen).to(dev) * u(0, 0.08)[:, None, None, None]
    return x.clamp(0, 1)


def mild(x: torch.Tensor, *, gen: torch.Generator) -> torch.Tensor:
    """Small contrast, brightness and noise changes (the other view of a training pair)."""
    n = len(x)
    c = (torch.rand(n, 1, 1, 1, generator=gen) * 0.3 + 0.85).to(x)
    b = (torch.rand(n, 1, 1, 1, generator=gen) * 0.1 - 0.05).to(x)
    noise = torch.randn(x.shape, generator=gen).to(x) * 0.02
    return ((x - 0.5) * c + 0.5 + b + noise).clamp(0, 1)
