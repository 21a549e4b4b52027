"""The mixing stage of the copy audit: samples made of several real images.

Exact searches in pixel space over the whole pool (one matrix product per pool block;
at 32 x 32 a 500 x 70k x 1024 product is well under a second on two CPU cores):

- **halves**: each half of the query (left, right, top, bottom) against the same half
  of every pool image, by correlation. A mosaic of two images holds an exact half of
  one of them. Statistic ``half_d = 1 - best half correlation``.
- **pieces**: mosaics of several images (2 x 2 and 3 x 3 grids, four columns, four
  rows). Each region of the query is searched against the same region of every pool
  image; a mosaic matches a real image exactly in every region. Statistic
  ``piece_d = 1 - mean best region correlation`` of the best layout. Irregular pieces
  are left to the descriptor and to membership.
- **blends**: matching pursuit. The query's best pixel matches (and the learned
  descriptor's candidates) are taken as first parents; for each, the pool image best
  correlated with what the first parent leaves unexplained is the second parent; the
  query is fitted as ``a * A + b * B + c`` by least squares. Statistic
  ``blend_d = 1 - R^2`` of the best pair. From that pair, parents are added the same
  way (the pool image best correlated with the fit's residual) up to four:
  ``blendk_d = 1 - R^2`` of that fit (blends of three and four images).

Images are the pixel stage's canonical form (mean over channels, lightly blurred),
area-downsampled to at most 32 px.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genbench.metrics.audit.ncc import canonical

REGIONS = ("left", "right", "top", "bottom")


#: Images a blend or a mosaic is searched for at most.
MAX_PARENTS = 4


@dataclass
class MixMatches:
    half_d: torch.Tensor  # N: 1 - best correlation of one half with the same half of a pool image
    half_index: torch.Tensor  # N: that pool image
    half_region: list[str]  # N: which half
    blend_d: torch.Tensor  # N: 1 - R^2 of the best two-image fit
    blend_pair: torch.Tensor  # N x 2: the two pool images of that fit
    piece_d: torch.Tensor  # N: 1 - mean best region correlation of the best mosaic layout
    piece_index: torch.Tensor  # N x 4: the pool images of its first four regions
    blendk_d: torch.Tensor  # N: 1 - R^2 of the fit with up to 4 parents
    blendk_parents: torch.Tensor  # N x 4: its parents


def full_vectors(images: torch.Tensor, device: torch.device, side: int = 32) -> torch.Tensor:
    """uint8 images -> N x S x S canonical grey images (S <= side), the stage's full size."""
    x = canonical(images, device)
    if x.shape[-1] > side:
        x = F.interpolate(x, size=(side, side), mode="area")
    return x[:, 0]


_vectors = full_vectors


def _region(x: torch.Tensor, name: str) -> torch.Tensor:
    """One half, without the row or column next to the cut (the blur mixes both sides)."""
    h, w = x.shape[-2:]
    if name == "left":
        r = x[..., :, : w // 2 - 1]
    elif name == "right":
        r = x[..., :, w // 2 + 1 :]
    elif name == "top":
        r = x[..., : h // 2 - 1, :]
    else:
        r = x[..., h // 2 + 1 :, :]
    return r.reshape(*x.shape[:-2], -1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean(-1, keepdim=True)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-3)


def _top_correlated(
    q: torch.Tensor,
    pool: torch.Tensor,
    *,
    k: int,
    region: str | None,
    chunk: int,
    exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k correlation of each query vector with the pool's (same region), in blocks."""
    qv = _unit(_region(q, region) if region else q.flatten(1))
    n = len(qv)
    best_v = torch.full((n, k), -2.0, device=qv.device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=qv.device)
    for s in range(0, len(pool), chunk):
        p = pool[s : s + chunk].to(qv.device)
        pv = _unit(_region(p, region) if region else p.flatten(1))
        sim = qv @ pv.T
        if exclude is not None:
            _mask_own(sim, exclude.to(qv.device), start=s)
        # The block's own top k first: merging k + k columns, not k + chunk, is the cost.
        cv, ci = sim.topk(min(k, sim.shape[1]), 1)
        v, i = torch.cat([best_v, cv], 1).topk(k, 1)
        best_i = torch.cat([best_i, ci + s], 1).gather(1, i)
        best_v = v
    return best_v, best_i


def _mask_own(sim: torch.Tensor, exclude: torch.Tensor, *, start: int) -> None:
    """Sets each query's own pool position (exclude, -1: none) in this block to -2, in place."""
    col = exclude - start
    rows = ((col >= 0) & (col < sim.shape[1])).nonzero()[:, 0]
    sim[rows, col[rows]] = -2.0


#: Per-pixel variance below which an image has no structure (under half a grey level): the
#: intercept alone explains it, so a two-image fit of it is no evidence of a blend.
FLAT_VARIANCE = (0.5 / 255) ** 2


def _fit_r2(q: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - R^2 of q ~ x a + y b + c (least squares), batched over leading dimensions;
    1 (nothing explained) for a flat q, whose R^2 is undefined."""
    ones = torch.ones_like(q)
    X = torch.stack([a, b, ones], -1).double()  # ... x D x 3
    y = q.double()[..., None]
    xtx = X.transpose(-1, -2) @ X + 1e-9 * torch.eye(3, dtype=X.dtype, device=X.device)
    coef = torch.linalg.solve(xtx, X.transpose(-1, -2) @ y)
    res = (y - X @ coef)[..., 0]
    tss = (q.double() - q.double().mean(-1, keepdim=True)).pow(2).sum(-1)
    flat = tss < FLAT_VARIANCE * q.shape[-1]
    return torch.where(flat, 1.0, res.pow(2).sum(-1) / tss.clamp_min(1e-12)).float()


def _coarse(x: torch.Tensor, side: int) -> torch.Tensor:
    return (
        F.interpolate(x[:, None], size=(side, side), mode="area")[:, 0] if x.shape[-1] > side else x
    )


def _region_corr(q: torch.Tensor, t: torch.Tensor, name: str) -> torch.Tensor:
    """Correlation of one half of q (N x H x W) with the same half of t (N x K x H x W)."""
    return (_unit(_region(q, name))[:, None] * _unit(_region(t, name))).sum(-1)


# params: the search's sizes, each with a default the detection tests were measured at
def match_mixes(
    queries: torch.Tensor,
    pool_images: torch.Tensor,
    *,
    device: torch.device,
    first_parents: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
    pool_full: torch.Tensor | None = None,
    pixel_parents: int = 2,
    shortlist: int = 2,
    search_side: int = 16,
    chunk: int = 16384,
    batch: int = 1024,  # all of a run's samples at once: each pool pass serves them all
) -> MixMatches:
    """Both statistics for uint8 queries against the uint8 pool (see the module docstring).

    The exact searches run at ``search_side`` px (4x cheaper at 32 px; area downsampling keeps
    a blend a blend and a half a half), keeping ``shortlist`` per half; the statistics are
    computed at full resolution (at most 32 px) on what they found.
    ``first_parents``: N x K more first-parent candidates (the learned descriptor's);
    ``exclude``: N pool positions a query may not use (itself; -1 none); ``pool_full``: the
    pool's :func:`full_vectors`, when the caller keeps them."""
    full = _vectors(pool_images, device) if pool_full is None else pool_full.to(device)
    pool = _coarse(full, search_side)
    parts: dict[str, list] = {k: [] for k in ("hd", "hi", "hr", "bd", "bp", "pd", "pi", "kd", "kp")}
    for s in range(0, len(queries), batch):
        qf = _vectors(queries[s : s + batch], device)
        q = _coarse(qf, search_side)
        ex = exclude[s : s + batch] if exclude is not None else None
        d, where, region = _halves(q, qf, pool, full, shortlist=shortlist, chunk=chunk, exclude=ex)
        parts["hd"].append(d)
        parts["hi"].append(where)
        parts["hr"] += [REGIONS[r] for r in region.tolist()]
        _, first = _top_correlated(q, pool, k=pixel_parents, region=None, chunk=chunk, exclude=ex)
        if first_parents is not None:
            first = torch.cat([first, first_parents[s : s + batch].to(first)], 1)
        d, pair, starts = _blends(q, qf, pool, full, first, chunk=chunk, exclude=ex)
        parts["bd"].append(d.cpu())
        parts["bp"].append(pair.cpu())
        d, parents = _more_parents(q, qf, pool, full, starts, chunk=chunk, exclude=ex)
        parts["kd"].append(d.cpu())
        parts["kp"].append(parents.cpu())
        d, pieces = _pieces(qf, full, exclude=ex)
        parts["pd"].append(d.cpu())
        parts["pi"].append(pieces.cpu())
    cat = {k: torch.cat(v) for k, v in parts.items() if k != "hr"}
    return MixMatches(
        cat["hd"].double(),
        cat["hi"],
        parts["hr"],
        cat["bd"].double(),
        cat["bp"],
        cat["pd"].double(),
        cat["pi"],
        cat["kd"].double(),
        cat["kp"],
    )


def _halves(
    q: torch.Tensor,
    qf: torch.Tensor,
    pool: torch.Tensor,
    full: torch.Tensor,
    *,
    shortlist: int,
    chunk: int,
    exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each half searched at the coarse size, verified at full size: (half_d, pool image,
    region index)."""
    best = torch.full((len(q),), -2.0, device=q.device)
    where = torch.zeros(len(q), dtype=torch.long, device=q.device)
    region = torch.zeros(len(q), dtype=torch.long, device=q.device)
    for r, name in enumerate(REGIONS):
        _, i = _top_correlated(q, pool, k=shortlist, region=name, chunk=chunk, exclude=exclude)
        corr = _region_corr(qf, full[i.cpu()].to(q.device), name)  # verified at full size
        v, j = corr.max(1)
        better = v > best
        best = torch.where(better, v, best)
        where = torch.where(better, i.gather(1, j[:, None])[:, 0], where)
        region = torch.where(better, torch.full_like(region, r), region)
    return (1 - best).clamp_min(0).cpu(), where.cpu(), region.cpu()


def layouts(side: int) -> dict[str, list[torch.Tensor]]:
    """The mosaic layouts searched: 2 x 2 and 3 x 3 grids, four columns, four rows. Each
    region is a boolean mask without the pixels next to an inner cut (the canonical blur
    mixes both sides of a seam)."""
    idx = torch.arange(side)

    def bands(k: int) -> list[torch.Tensor]:
        cuts = [round(side * i / k) for i in range(k + 1)]
        out = []
        for a, b in itertools.pairwise(cuts):
            lo, hi = a + (1 if a > 0 else 0), b - (1 if b < side else 0)
            out.append((idx >= lo) & (idx < hi))
        return out

    def grid(k: int) -> list[torch.Tensor]:
        return [r[:, None] & c[None, :] for r in bands(k) for c in bands(k)]

    full = torch.ones(side, dtype=torch.bool)
    return {
        "2x2 grid": grid(2),
        "3x3 grid": grid(3),
        "4 columns": [full[:, None] & c[None, :] for c in bands(4)],
        "4 rows": [r[:, None] & full[None, :] for r in bands(4)],
    }


#: A region whose pixels vary less than this (std, in [0, 1]) has no structure to match.
FLAT_REGION_STD = 0.02


def _pieces(
    qf: torch.Tensor, full: torch.Tensor, *, exclude: torch.Tensor | None, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mosaics of several images: for each layout, every region of the query against the
    same region of every pool image (exact, by correlation); the layout's score is the
    mean best correlation over the regions with structure. Returns (``piece_d`` = 1 - the
    best layout's score, the pool images of that layout's first four regions)."""
    n, dev = len(qf), qf.device
    best_score = torch.full((n,), -2.0, device=dev)
    best_src = torch.full((n, MAX_PARENTS), -1, dtype=torch.long, device=dev)
    for regions in layouts(qf.shape[-1]).values():
        corr, src, weight = [], [], []
        for mask in regions:
            m = mask.to(dev)
            qv = qf[:, m]
            # A one-pixel region (8 px images) has no structure, and no sample std to warn on.
            has = (
                qv.std(1) > FLAT_REGION_STD
                if qv.shape[1] > 1
                else torch.zeros(len(qv), dtype=torch.bool, device=dev)
            )
            weight.append(has.float())
            v, i = _top_masked(qv, full, m, chunk=chunk, exclude=exclude)
            corr.append(v)
            src.append(i)
        c, w = torch.stack(corr, 1), torch.stack(weight, 1)
        total = w.sum(1)
        score = torch.where(
            total > 0, (c * w).sum(1) / total.clamp_min(1), torch.full_like(total, -1.0)
        )
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        s = torch.stack(src, 1)[:, :MAX_PARENTS]
        s = torch.cat(
            [s, torch.full((n, MAX_PARENTS - s.shape[1]), -1, device=dev, dtype=torch.long)], 1
        )
        best_src = torch.where(better[:, None], s, best_src)
    return (1 - best_score).clamp(0, 2), best_src


def _top_masked(
    qv: torch.Tensor,
    full: torch.Tensor,
    mask: torch.Tensor,
    *,
    chunk: int,
    exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best correlation of each query region (n x P pixels) with the same region of every
    pool image, and that image."""
    qu = _unit(qv)
    best_v = torch.full((len(qv),), -2.0, device=qv.device)
    best_i = torch.zeros(len(qv), dtype=torch.long, device=qv.device)
    for s in range(0, len(full), chunk):
        pv = _unit(full[s : s + chunk].to(qv.device)[:, mask])
        sim = qu @ pv.T
        if exclude is not None:
            _mask_own(sim, exclude.to(qv.device), start=s)
        v, i = sim.max(1)
        better = v > best_v
        best_v = torch.where(better, v, best_v)
        best_i = torch.where(better, i + s, best_i)
    return best_v, best_i


def _fit_residual(q: torch.Tensor, parents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares of q (n x D) on its parents (n x K x D) and a constant: (1 - R^2,
    residual); 1 for a flat q (see :func:`_fit_r2`)."""
    X = torch.cat([parents, torch.ones_like(parents[:, :1])], 1).transpose(1, 2).double()
    y = q.double()[..., None]
    k = X.shape[-1]
    xtx = X.transpose(-1, -2) @ X + 1e-9 * torch.eye(k, dtype=X.dtype, device=X.device)
    res = (y - X @ torch.linalg.solve(xtx, X.transpose(-1, -2) @ y))[..., 0]
    tss = (q.double() - q.double().mean(-1, keepdim=True)).pow(2).sum(-1)
    flat = tss < FLAT_VARIANCE * q.shape[-1]
    d = torch.where(flat, 1.0, res.pow(2).sum(-1) / tss.clamp_min(1e-12))
    return d.float(), res.float()


def _more_parents(
    q: torch.Tensor,
    qf: torch.Tensor,
    pool: torch.Tensor,
    full: torch.Tensor,
    starts: torch.Tensor,
    *,
    chunk: int,
    exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """From every pair the two-image search reached (n x k x 2), add parents one at a time
    (the pool image best correlated with the coarse fit's residual, not already a parent)
    up to MAX_PARENTS; returns 1 - R^2 of the best full-size fit and its parents."""
    n, k = starts.shape[:2]
    parents = starts.reshape(n * k, 2).to(q.device)
    qc = q.flatten(1).repeat_interleave(k, 0)
    ex = exclude.repeat_interleave(k) if exclude is not None else None
    side = pool.shape[-1]

    def gather(src: torch.Tensor) -> torch.Tensor:
        return (
            src[parents.reshape(-1).cpu()].to(q.device).reshape(len(parents), parents.shape[1], -1)
        )

    for _ in range(MAX_PARENTS - 2):
        _, res = _fit_residual(qc, gather(pool))
        _, idx = _top_correlated(
            res.reshape(-1, side, side),
            pool,
            k=parents.shape[1] + 1,
            region=None,
            chunk=chunk,
            exclude=ex,
        )
        fresh = (idx[:, :, None] != parents[:, None]).all(-1)  # not a parent already
        parents = torch.cat([parents, idx.gather(1, fresh.float().argmax(1, keepdim=True))], 1)
    d, _ = _fit_residual(qf.flatten(1).repeat_interleave(k, 0), gather(full))
    if ex is not None:  # a descriptor start may be the query itself
        d = torch.where((parents == ex[:, None].to(parents)).any(1), 1.0, d)
    d, j = d.reshape(n, k).min(1)
    best = parents.reshape(n, k, -1).gather(1, j[:, None, None].expand(-1, 1, parents.shape[1]))[
        :, 0
    ]
    return d.clamp_min(0), best


def _best_partner(
    q: torch.Tensor,
    a: torch.Tensor,
    pool: torch.Tensor,
    *,
    chunk: int,
    exclude: torch.Tensor | None,
) -> torch.Tensor:
    """For each (query, parent) pair (n x k x D): the two pool images best correlated with
    what the parent leaves unexplained."""
    n, k = a.shape[:2]
    au = _unit(a)
    qu = _unit(q)[:, None]
    resid = qu - (au * qu).sum(-1, keepdim=True) * au
    side = pool.shape[-1]
    _, idx = _top_correlated(
        resid.reshape(n * k, -1, side),
        pool,
        k=2,
        region=None,
        chunk=chunk,
        exclude=exclude.repeat_interleave(k) if exclude is not None else None,
    )
    return idx


def _blends(
    q: torch.Tensor,
    qf: torch.Tensor,
    pool: torch.Tensor,
    full: torch.Tensor,
    first: torch.Tensor,
    *,
    chunk: int,
    exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternating matching pursuit from each first parent: the partner that best explains
    the rest, then (from that partner) the first parent again, so a look-alike start still
    reaches the exact pair. Returns the best pair's 1 - R^2 (at full size) and the pair."""
    n, k = first.shape

    def gather(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return src[idx.reshape(-1).cpu()].to(q.device).flatten(1).reshape(n, k, -1)

    def partner(of: torch.Tensor) -> torch.Tensor:
        two = _best_partner(q.flatten(1), gather(pool, of), pool, chunk=chunk, exclude=exclude)
        return torch.where(two[:, 0] == of.reshape(-1), two[:, 1], two[:, 0]).reshape(n, k)

    second = partner(first)
    again = partner(second)
    flat = qf.flatten(1)[:, None].expand(-1, k, -1)
    r2a = _fit_r2(flat, gather(full, first), gather(full, second))
    r2b = _fit_r2(flat, gather(full, again), gather(full, second))
    use_b = r2b < r2a
    first = torch.where(use_b, again, first)
    r2 = torch.minimum(r2a, r2b)
    if exclude is not None:  # a descriptor candidate may be the query itself
        r2 = torch.where(first == exclude[:, None].to(first), 1.0, r2)
    d, j = r2.min(1)
    pairs = torch.stack([first, second], -1)  # n x k x 2: every start, for the k-image search
    return d.clamp_min(0), pairs.gather(1, j[:, None, None].expand(-1, 1, 2))[:, 0], pairs
