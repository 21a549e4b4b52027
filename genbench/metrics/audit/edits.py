"""Edits of images that a copier could apply to training images, as tensors.

One set of functions serves two jobs: the copy descriptor trains to be blind to them
(:func:`random_attack`: random compositions of the trained families at random strengths),
and the tests and the documentation's detection table apply each family at a stated
strength (:func:`apply`). The :data:`HELD_OUT` families never enter the descriptor's
training: detection on them measures how the audit generalises to edits it was never
shown.

Images are float N x 1 x H x W in [0, 1] (the audit's canonical form) unless stated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: The named edit families the descriptor trains on (see :func:`apply`).
TRAINED = (
    "shift",
    "diagonal",
    "rotate",
    "zoom",
    "crop",
    "elastic",
    "erase",
    "blend",
    "blend3",
    "blend4",
    "mosaic",
    "grid",
    "strips",
    "irregular",
    "noise",
    "flip",
)
#: Families kept out of the descriptor's training: smooth global warps of other shapes,
#: a tone edit, and compositions of several mild edits that include them.
HELD_OUT = ("swirl", "barrel", "posterize", "mild-composition")
FAMILIES = TRAINED + HELD_OUT


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
    shrinks with a black border); crop: area kept of a random crop, resized back to the
    full side; elastic: amplitude (px) of a smooth random displacement field; erase: side
    of a black square; the mixes (see :func:`_mix`); noise: Gaussian sigma; flip: mirror
    (strength ignored). Held out of the descriptor's training: swirl (degrees at the
    centre), barrel (radial distortion coefficient, random sign: barrel or pincushion),
    posterize (grey levels), mild-composition (see :func:`mild_composition`).
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
    if family == "crop":
        return crop_resize(x, area=torch.full((n,), float(strength)), gen=gen)
    if family == "elastic":
        return elastic(x, amplitude=strength, gen=gen)
    if family in MIXES:
        return _mix(x, family, strength, gen=gen, others=others)
    if family == "noise":
        return (x + strength * torch.randn(x.shape, generator=gen).to(x)).clamp(0, 1)
    if family == "flip":
        return x.flip(-1)
    if family == "swirl":
        return swirl(x, angle_deg=sign * strength)
    if family == "barrel":
        return barrel(x, k=sign * strength)
    if family == "posterize":
        return posterize(x, levels=int(strength))
    if family == "mild-composition":
        return mild_composition(x, strength, gen=gen)
    raise ValueError(f"unknown edit family {family!r} (known: {', '.join(FAMILIES)})")


#: Families that recombine several images (``others``: K x N x 1 x H x W, or N x ... for one).
MIXES = ("blend", "blend3", "blend4", "mosaic", "grid", "strips", "irregular")


def _mix(
    x: torch.Tensor,
    family: str,
    strength: float,
    *,
    gen: torch.Generator,
    others: torch.Tensor | None,
) -> torch.Tensor:
    """blend: weight of the image, the rest from one other; blend3/blend4: equal weights
    of the image and 2 or 3 others (strength ignored); mosaic: share kept of the image
    along a random axis; grid: a strength x strength grid of tiles from the image and the
    others in turn; strips: that many strips; irregular: smooth random regions."""
    if others is None:
        raise ValueError(f"the {family} edit needs other images")
    o = others if others.dim() == 5 else others[None]
    if family == "blend":
        return strength * x + (1 - strength) * o[0]
    if family in ("blend3", "blend4"):
        k = 3 if family == "blend3" else 4
        if len(o) < k - 1:
            raise ValueError(f"the {family} edit needs {k - 1} sets of other images")
        return (x + o[: k - 1].sum(0)) / k
    if family == "mosaic":
        axis = -1 if torch.rand((), generator=gen) < 0.5 else -2
        return mosaic(x, o[0], keep=strength, axis=axis)
    sources = torch.cat([x[None], o])
    if family == "grid":
        owner = grid_owner(x.shape[-1], cells=int(strength), k=len(sources), gen=gen)
    elif family == "strips":
        owner = strip_owner(x.shape[-1], strips=int(strength), k=len(sources), gen=gen)
    else:
        owner = irregular_owner(len(x), x.shape[-1], k=len(sources), gen=gen).to(x.device)
    return compose(sources, owner.to(x.device))


def _grid_sample(x: torch.Tensor, grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _base_grid(x: torch.Tensor) -> torch.Tensor:
    """N x H x W x 2 identity sampling grid (x then y, in [-1, 1])."""
    n = len(x)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    return F.affine_grid(theta, list(x.shape), align_corners=False)


def crop_resize(x: torch.Tensor, *, area: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A crop keeping ``area`` (per image, in (0, 1]) of each image, aspect 3:4 to 4:3, at a
    random place, resized back to the full side: crops at any scale."""
    n = len(x)
    aspect = torch.exp((torch.rand(n, generator=gen) - 0.5) * 2 * math.log(4 / 3))
    wx = (area * aspect).sqrt().clamp(0.05, 1)
    wy = (area / aspect).sqrt().clamp(0.05, 1)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - wx)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - wy)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = wx, cx, wy, cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return _grid_sample(x, grid)


def _smooth_field(n: int, side: int, *, channels: int, coarse: int, gen: torch.Generator):
    """N x channels x side x side smooth random field (unit-variance noise on a coarse grid,
    upsampled bicubically)."""
    f = torch.randn(n, channels, coarse, coarse, generator=gen)
    return F.interpolate(f, size=(side, side), mode="bicubic", align_corners=False)


def elastic(
    x: torch.Tensor, *, amplitude: float | torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """A smooth random warp: each pixel displaced by a smooth field of about ``amplitude``
    pixels (a 4 x 4 grid of random vectors, upsampled)."""
    n, _, h, w = x.shape
    amp = torch.as_tensor(amplitude, dtype=x.dtype).reshape(-1, 1, 1, 1)
    d = _smooth_field(n, h, channels=2, coarse=4, gen=gen) * amp * 2 / w
    grid = _base_grid(x) + d.permute(0, 2, 3, 1).to(x)
    return _grid_sample(x, grid)


def swirl(x: torch.Tensor, *, angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each pixel about the centre by ``angle_deg`` at the centre, fading out with
    the radius (a smooth global warp the descriptor never trains on)."""
    g = _base_grid(x)
    r2 = (g**2).sum(-1)
    a = angle_deg.to(x)[:, None, None] * math.pi / 180 * torch.exp(-r2 / 0.5)
    c, s = torch.cos(a), torch.sin(a)
    gx, gy = g[..., 0], g[..., 1]
    return _grid_sample(x, torch.stack([c * gx - s * gy, s * gx + c * gy], -1))


def barrel(x: torch.Tensor, *, k: torch.Tensor) -> torch.Tensor:
    """Radial lens distortion: the image at radius r is read at r (1 + k r^2) (k > 0
    barrel, k < 0 pincushion)."""
    g = _base_grid(x)
    r2 = (g**2).sum(-1, keepdim=True)
    return _grid_sample(x, g * (1 + k.to(x)[:, None, None, None] * r2))


def posterize(x: torch.Tensor, *, levels: int) -> torch.Tensor:
    levels = max(2, levels)
    return (x * (levels - 1)).round() / (levels - 1)


def mild_composition(x: torch.Tensor, strength: float, *, gen: torch.Generator) -> torch.Tensor:
    """Several mild edits at once, each within the range a single edit passes unnoticed:
    a sub-pixel to 2 px shift, a rotation of up to 3 degrees, a zoom of up to 5%, a swirl of
    up to 20 degrees, a barrel distortion of up to 0.08, contrast and brightness changes,
    then 16 grey levels; all scaled by ``strength``."""
    n, s = len(x), strength

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    x = affine(
        x,
        angle_deg=u(-3, 3) * s,
        scale=torch.exp(u(-0.05, 0.05) * s),
        shift_px=torch.stack([u(-2, 2), u(-2, 2)], 1) * s,
    )
    x = swirl(x, angle_deg=u(-20, 20) * s)
    x = barrel(x, k=u(-0.08, 0.08) * s)
    c, b = 1 + u(-0.15, 0.15) * s, u(-0.05, 0.05) * s
    x = ((x - 0.5) * c[:, None, None, None].to(x) + 0.5 + b[:, None, None, None].to(x)).clamp(0, 1)
    return posterize(x, levels=16)


def compose(sources: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Pixels of K x N x C x H x W sources picked by ``owner`` (H x W or N x H x W, values
    in 0..K-1)."""
    _, n, c, h, w = sources.shape
    idx = owner.reshape(-1, 1, h, w).expand(n, c, h, w)[None].long()
    return sources.gather(0, idx)[0]


def grid_owner(side: int, *, cells: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """A cells x cells grid of tiles dealt to k sources in a random order (each source
    gets about the same number of tiles)."""
    cells = max(2, cells)
    order = torch.randperm(cells * cells, generator=gen) % k
    tile = torch.arange(side) * cells // side
    return order.reshape(cells, cells)[tile[:, None], tile[None, :]]


def strip_owner(side: int, *, strips: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """``strips`` equal strips (columns or rows, at random) dealt to k sources."""
    strips = max(2, strips)
    order = torch.randperm(strips, generator=gen) % k
    band = order[torch.arange(side) * strips // side]
    vertical = bool(torch.rand((), generator=gen) < 0.5)
    return band[None, :].expand(side, side) if vertical else band[:, None].expand(side, side)


def irregular_owner(n: int, side: int, *, k: int, gen: torch.Generator) -> torch.Tensor:
    """N x side x side regions of irregular shape: the source whose smooth random field is
    largest at each pixel."""
    return _smooth_field(n, side, channels=k, coarse=4, gen=gen).argmax(1)


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
    """A random composition of the trained families at random strengths: what the copy
    descriptor learns to undo. Never uses a :data:`HELD_OUT` family.

    Recombination (blends of 2 to 4 images, mosaics in halves, grids, strips or irregular
    regions; the image always keeps the largest share), then geometry (shifts up to
    ``max_shift`` px, rotations up to 15 degrees, zoom 0.8-1.25 or a crop of 35-100% of the
    area, smooth elastic warps, flips), occlusion (erasing), photometry (brightness,
    contrast, gamma, blur, noise). Each edit is drawn independently, so views combine
    any number of them.
    """
    n, dev, side = len(x), x.device, x.shape[-1]

    def u(lo: float, hi: float, size: tuple[int, ...] = ()) -> torch.Tensor:
        return (torch.rand((n, *size), generator=gen) * (hi - lo) + lo).to(dev)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) < p).to(dev)

    x = _random_mix(x, gen=gen, coin=coin, u=u)
    geo = coin(0.85).float()
    angle = u(-15, 15) * coin(0.6).float() * geo
    scale = torch.exp(u(math.log(0.8), math.log(1.25)) * coin(0.5).float() * geo)
    shift = u(-max_shift, max_shift, (2,)) * geo[:, None]
    pad = "zeros" if torch.rand((), generator=gen) < 0.7 else "border"
    x = affine(x, angle_deg=angle, scale=scale, shift_px=shift, padding=pad)
    crop = coin(0.25)[:, None, None, None]
    x = torch.where(crop, crop_resize(x, area=u(0.35, 1.0).cpu(), gen=gen), x)
    warp = coin(0.3)[:, None, None, None]
    x = torch.where(warp, elastic(x, amplitude=u(0.3, 2.5).cpu() * side / 32, gen=gen), x)
    x = torch.where(coin(0.5)[:, None, None, None], x.flip(-1), x)
    x = torch.where(coin(0.1)[:, None, None, None], x.flip(-2), x)

    if torch.rand((), generator=gen) < 0.35:
        size = int(torch.randint(2, max(3, side // 3) + 1, (), generator=gen))
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


def _random_mix(x: torch.Tensor, *, gen: torch.Generator, coin, u) -> torch.Tensor:
    """Recombine about 45% of the images with 1 to 3 others from the batch: blends in which
    the image keeps the largest weight, or mosaics (halves, grids, strips, irregular
    regions) in which it keeps the largest area."""
    n, side = len(x), x.shape[-1]
    others = torch.stack([x[torch.randperm(n, generator=gen).to(x.device)] for _ in range(3)])
    k = int(torch.randint(1, 4, (), generator=gen))  # other images in this batch's mixes
    # Blends: the image's weight is the largest of k + 1 (0.45-0.85 with one other).
    w_self = u(0.45, 0.85) if k == 1 else u(1.2 / (k + 1), 0.7)
    rest = torch.rand((k, n), generator=gen).to(x.device) + 0.1
    rest = rest / rest.sum(0) * (1 - w_self)
    blended = w_self[:, None, None, None] * x + (rest[..., None, None, None] * others[:k]).sum(0)
    x_b = torch.where(coin(0.25)[:, None, None, None], blended, x)
    # Mosaics: the image owns its own region plus one in (k + 1) of the rest, at least.
    layout = int(torch.randint(0, 4, (), generator=gen))
    if layout == 0:
        axis = -1 if torch.rand((), generator=gen) < 0.5 else -2
        keep = float(u(0.5, 0.75)[0])
        mosaic_x = mosaic(x, others[0], keep=keep, axis=axis)
    else:
        if layout == 1:
            owner = grid_owner(
                side, cells=int(torch.randint(2, 4, (), generator=gen)), k=k + 2, gen=gen
            )
        elif layout == 2:
            owner = strip_owner(
                side, strips=int(torch.randint(3, 7, (), generator=gen)), k=k + 2, gen=gen
            )
        else:
            owner = irregular_owner(n, side, k=k + 2, gen=gen)
        # Sources 0 and 1 are both the image: it keeps the largest area.
        owner = (owner.to(x.device) - 1).clamp_min(0)
        mosaic_x = compose(torch.cat([x[None], others[:k]]), owner)
    return torch.where(coin(0.2)[:, None, None, None], mosaic_x, x_b)


def mild(x: torch.Tensor, *, gen: torch.Generator) -> torch.Tensor:
    """Small contrast, brightness and noise changes (the other view of a training pair)."""
    n = len(x)
    c = (torch.rand(n, 1, 1, 1, generator=gen) * 0.3 + 0.85).to(x)
    b = (torch.rand(n, 1, 1, 1, generator=gen) * 0.1 - 0.05).to(x)
    noise = torch.randn(x.shape, generator=gen).to(x) * 0.02
    return ((x - 0.5) * c + 0.5 + b + noise).clamp(0, 1)
