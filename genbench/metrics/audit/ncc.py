"""The pixel stage of the copy audit: exact normalized cross-correlation.

Every query is matched against a pool of real images (the training split, the
validation slice and the held-out split) under the cheap edits a copier could apply:

- the 8 flips and quarter turns (the dihedral group: mirror, upside down, rotate);
- translations of up to ``max_shift`` pixels, whatever fills the uncovered border;
- brightness, contrast and inversion (any affine change of intensity:
  comparisons are normalized cross-correlations, sign ignored);
- mild noise and blur (images are compared after a small blur);
- colour edits that keep the mean over channels (channel swaps, greyscale).

Retrieval: each query's 8 dihedral variants are matched against every pool image by
two cheap descriptors (a translation-tolerant low-frequency Fourier magnitude and a
coarse pooled centre crop at several offsets), plus any candidates the learned
descriptor found (``extra``). Verification: the exact NCC of the query's centre crop
with every shifted window of each candidate, for the 8 variants. The statistic is
``d1 = 1 - NCC`` to the best pool image and ``ratio = d1 / d2`` against the best other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.utils.naming import digest as key_digest

#: Bump when the statistic changes: cached descriptors and matches are keyed by it.
VERSION = 3  # 3: a pool of real images with self-exclusion and extra candidates
TRANSFORMS = (
    "identity",
    "mirror",
    "rot90",
    "rot90+mirror",
    "rot180",
    "rot180+mirror",
    "rot270",
    "rot270+mirror",
)


@dataclass(frozen=True)
class PixelSearch:
    max_shift: int = 3  # pixels; the effective shift is capped at resolution/4 - 1
    candidates: int = 48  # per query, from the Fourier descriptor
    spatial_candidates: int = 16  # per query, from the pooled descriptor
    chunk: int = 65536  # pool images per retrieval block on CUDA (bounds memory at 1M)
    # On the CPU small blocks keep the similarity block in cache: 1024 searched 60k images
    # 1.7x faster than one 65536 block on 2 cores. Neither changes a result (exact search).
    cpu_chunk: int = 1024

    def chunk_for(self, device: torch.device) -> int:
        return self.chunk if device.type == "cuda" else self.cpu_chunk

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical(images: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x 1 x H x W: mean over channels (blind to channel
    swaps and greyscale conversion) in [0, 1], lightly blurred (noise-tolerant)."""
    x = images.to(device or images.device).float().mean(1, keepdim=True) / 255.0
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device) / 4
    k2 = (k[:, None] * k[None, :])[None, None]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2)


def effective_shift(resolution: int, max_shift: int) -> int:
    return max(0, min(max_shift, resolution // 4 - 1))


def _standardize(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean(-1, keepdim=True)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def dihedral(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W -> N x 8 x 1 x H x W in the order of :data:`TRANSFORMS`."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, (-2, -1))
        out += [r, r.flip(-1)]
    return torch.stack(out, 1)


def _crop(x: torch.Tensor, m: int, dy: int = 0, dx: int = 0) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x[..., m + dy : h - m + dy, m + dx : w - m + dx]


class _Descriptors:
    """The two retrieval descriptors of centre crops (margin = the shift searched)."""

    def __init__(self, resolution: int, shift: int) -> None:
        self.m = shift + 1 if shift else 0  # +1: the blur smears a shifted copy's fill inwards
        side = resolution - 2 * self.m
        self.low = max(2, min(6, side // 2))  # Fourier frequencies kept per axis
        self.pool = max(2, min(6, side))
        w = torch.hann_window(side + 2, periodic=False)[1:-1]
        self.window = w[:, None] * w[None, :]  # tapers the crop's border: shift-tolerant
        # Query crops at offsets spaced about half a pooling cell apart cover every shift.
        step = max(1, min(shift, int(side / self.pool) // 2))
        self.offsets = list(range(-(shift // step) * step, shift + 1, step)) if shift else [0]

    def fourier(self, x: torch.Tensor) -> torch.Tensor:
        c = _crop(x, self.m)
        lead, (h, w) = c.shape[:-3], c.shape[-2:]
        v = _standardize(c.reshape(-1, h * w)).reshape(-1, h, w) * self.window.to(c.device)
        mag = torch.fft.rfft2(v).abs()
        L = self.low
        d = torch.cat([mag[:, :L, :L].flatten(1), mag[:, -L + 1 :, 1:L].flatten(1)], 1)
        return _standardize(torch.log1p(10 * d)).reshape(*lead, -1)

    def pooled(self, x: torch.Tensor, dy: int = 0, dx: int = 0) -> torch.Tensor:
        c = _crop(x, self.m, dy, dx)
        lead = c.shape[:-3]
        p = F.adaptive_avg_pool2d(c.reshape(-1, 1, *c.shape[-2:]), self.pool).flatten(1)
        return _standardize(p).reshape(*lead, -1)


@dataclass
class TrainIndex:
    """Retrieval descriptors of every pool image (cached on disk: the warm path)."""

    fourier: torch.Tensor  # M x Df, float16
    pooled: torch.Tensor  # M x Dp, float16
    resolution: int
    shift: int


def build_index(
    train_images: torch.Tensor,
    settings: PixelSearch,
    *,
    device: torch.device,
    use_cache: bool = True,
) -> tuple[TrainIndex, bool]:
    """Descriptors of all pool images, cached by the images' hash. Returns (index, cache hit)."""
    res = train_images.shape[-1]
    shift = effective_shift(res, settings.max_shift)
    key = key_digest(
        {"v": VERSION, "images": sha256_tensor(train_images), "shift": shift, "res": res}
    )
    path = cache_root() / "copies" / f"index-{key}.pt"
    if use_cache and path.exists():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            return TrainIndex(d["fourier"], d["pooled"], res, shift), True
        except (OSError, RuntimeError, KeyError):
            pass  # unreadable cache: rebuild
    desc = _Descriptors(res, shift)
    four, pool = [], []
    for s in range(0, len(train_images), 8192):
        x = canonical(train_images[s : s + 8192], device)
        four.append(desc.fourier(x).half().cpu())
        pool.append(desc.pooled(x).half().cpu())
    idx = TrainIndex(torch.cat(four), torch.cat(pool), res, shift)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"fourier": idx.fourier, "pooled": idx.pooled}, tmp)
        tmp.replace(path)
    return idx, False


# -- search ---------------------------------------------------------------------------
@dataclass
class Matches:
    ncc1: torch.Tensor  # N: best |NCC| to a pool image
    ncc2: torch.Tensor  # N: best |NCC| to any other pool image
    index: torch.Tensor  # N: position of the best match in the pool
    transform: list[str]  # N: how the pool image was edited to give the query

    @property
    def distance(self) -> torch.Tensor:
        return (1 - self.ncc1).clamp_min(0)

    @property
    def ratio(self) -> torch.Tensor:
        return self.distance / (1 - self.ncc2).clamp_min(1e-6)


def _topk_similar(
    queries: torch.Tensor, base: torch.Tensor, k: int, *, chunk: int, absolute: bool
) -> torch.Tensor:
    """queries N x V x D, base M x D -> N x k base positions with the highest similarity
    (max over the V variants), exact, in blocks of ``chunk`` base rows."""
    n, k = len(queries), min(k, len(base))
    best_v = torch.full((n, k), -math.inf, device=queries.device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=queries.device)
    q = queries.to(torch.bfloat16 if queries.device.type == "cuda" else torch.float32)
    for s in range(0, len(base), chunk):
        b = base[s : s + chunk].to(device=q.device, dtype=q.dtype)
        sim = torch.einsum("nvd,md->nvm", q, b).float()
        # max |x| as max(max x, -min x): two reductions instead of a copy (same values).
        sim = torch.maximum(sim.amax(1), sim.amin(1).neg_()) if absolute else sim.amax(1)
        # The block's own top k first: merging k + k columns, not k + chunk, is the cost.
        cv, ci = sim.topk(min(k, sim.shape[1]), 1)
        v, i = torch.cat([best_v, cv], 1).topk(k, 1)
        best_i = torch.cat([best_i, ci + s], 1).gather(1, i)
        best_v = v
    return best_i


def _window_sums(x: torch.Tensor, h: int) -> torch.Tensor:
    """Sums over every h x h window (stride 1) from an integral image, in float64 so that
    the variance s2 - s1^2/d does not cancel: far cheaper than an h x h average pool."""
    c = F.pad(x.double(), (1, 0, 1, 0)).cumsum(-1).cumsum(-2)
    s = c[..., h:, h:] - c[..., :-h, h:] - c[..., h:, :-h] + c[..., :-h, :-h]
    return s.to(x.dtype)


def _verify(
    qx: torch.Tensor, cand: torch.Tensor, train_images: torch.Tensor, shift: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact |NCC| of each query's centre crop (8 variants) with every window of each
    candidate. Returns (N x K best |NCC|, N x K code = variant * W^2 * 2 + offset * 2 + sign)."""
    n, k = cand.shape
    res = qx.shape[-1]
    m = shift + 1 if shift else 0  # +1: the blur mixes a shifted copy's fill into the edge row
    h = res - 2 * m
    q = _standardize(_crop(dihedral(qx), m).reshape(n, 8, -1)).reshape(n * 8, 1, h, h)
    t = canonical(train_images[cand.T.reshape(-1).cpu()], qx.device).reshape(k, n, res, res)
    num = F.conv2d(t, q, groups=n)  # k x n*8 x W x W
    d = h * h
    s1, s2 = _window_sums(t, h), _window_sums(t * t, h)
    den = (s2 - s1 * s1 / d).clamp_min(1e-8).sqrt()  # k x n x W x W
    w = num.shape[-1]
    ncc = num.reshape(k, n, 8, w, w) / den[:, :, None]
    flat = ncc.permute(1, 0, 2, 3, 4).reshape(n, k, -1)  # n x k x (8 * W * W)
    best, where = flat.abs().max(2)
    sign = (flat.gather(2, where[..., None])[..., 0] < 0).long()
    return best, where * 2 + sign


def _describe_code(code: int, shift: int, res: int) -> str:
    m = shift + 1 if shift else 0
    w = 2 * m + 1
    sign, rest = code % 2, code // 2
    variant, off = divmod(rest, w * w)
    oy, ox = divmod(off, w)
    # The query's crop starts at m; it matched the training window at (oy, ox).
    dy, dx = m - oy, m - ox
    parts = [TRANSFORMS[variant]] if variant else []
    if dy or dx:
        parts.append(f"shift ({dy:+d}, {dx:+d}) px")
    if sign:
        parts.append("inverted")
    return ", ".join(parts) or "identity"


def match(
    queries: torch.Tensor,
    train_images: torch.Tensor,
    index: TrainIndex,
    settings: PixelSearch,
    *,
    device: torch.device,
    batch: int = 64,
    extra: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> Matches:
    """Best and second-best pool image of each uint8 query image (the whole pool).

    ``extra``: N x K more candidate pool positions per query (the learned descriptor's);
    ``exclude``: N pool positions a query may not match (itself, for pool images; -1 none).
    """
    desc = _Descriptors(index.resolution, index.shift)
    four_base = index.fourier.to(device)
    pool_base = index.pooled.to(device)
    out1, out2, outi, codes = [], [], [], []
    for s in range(0, len(queries), batch):
        qx = canonical(queries[s : s + batch], device)
        var = dihedral(qx)  # n x 8 x 1 x H x W
        chunk = settings.chunk_for(qx.device)
        a = _topk_similar(
            desc.fourier(var), four_base, settings.candidates, chunk=chunk, absolute=False
        )
        pooled = torch.cat(
            [desc.pooled(var, dy, dx) for dy in desc.offsets for dx in desc.offsets], 1
        )
        b = _topk_similar(
            pooled, pool_base, settings.spatial_candidates, chunk=chunk, absolute=True
        )
        cand = torch.cat([a, b] + ([extra[s : s + batch].to(a)] if extra is not None else []), 1)
        ncc, code = _verify(qx, cand, train_images, index.shift)
        # A pool image found twice counts once (else it is its own runner-up); a query
        # never matches itself.
        cs, order = cand.sort(1)
        dup = torch.zeros_like(cs, dtype=torch.bool)
        dup[:, 1:] = cs[:, 1:] == cs[:, :-1]
        ncc = ncc.scatter(1, order, torch.where(dup, -1.0, ncc.gather(1, order)))
        if exclude is not None:
            ncc = torch.where(cand == exclude[s : s + batch, None].to(cand), -1.0, ncc)
        top, pos = ncc.topk(min(2, ncc.shape[1]), 1)
        out1.append(top[:, 0].clamp_min(0).cpu())
        second = top[:, 1] if top.shape[1] > 1 else torch.zeros_like(top[:, 0])
        out2.append(second.clamp_min(0).cpu())
        outi.append(cand.gather(1, pos[:, :1])[:, 0].cpu())
        codes += code.gather(1, pos[:, :1])[:, 0].tolist()
    return Matches(
        torch.cat(out1).double() if out1 else torch.zeros(0, dtype=torch.float64),
        torch.cat(out2).double() if out2 else torch.zeros(0, dtype=torch.float64),
        torch.cat(outi) if outi else torch.zeros(0, dtype=torch.long),
        [_describe_code(c, index.shift, index.resolution) for c in codes],
    )
