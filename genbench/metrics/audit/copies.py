"""The copy audit: does a generator return (edited) real images?

Every sample is searched in a **pool** of every real image a generator could have
seen or replayed: the training split, the validation slice that ``evaluate()``
receives, and the whole held-out split (the FID reference included). Three stages,
each exact over the pool:

1. **learned descriptor** (:mod:`genbench.metrics.audit.descriptor`): an embedding trained
   on the training split to be blind to shifts, rotations, zooms, flips, erasing,
   blends, mosaics and photometric edits; exact nearest neighbours by cosine.
   Statistics: ``desc_d = 1 - cos`` to the nearest pool image, ``desc_ratio`` = that
   over the distance to the second nearest;
2. **pixel NCC** (:mod:`genbench.metrics.audit.ncc`): normalized cross-correlation under
   flips, quarter turns, shifts and intensity changes, verified on the pixel stage's
   own shortlist plus the descriptor's neighbours. ``ncc_d``, ``ncc_ratio``;
3. **mixes** (:mod:`genbench.metrics.audit.mixes`): exact half-image matches (mosaics) and
   two-image least-squares fits (blends). ``half_d``, ``blend_d``.

A sample is a copy when any statistic falls below its threshold: the ``alpha / 6``
quantile of the same statistic over fresh held-out images (calibration set), so a
fresh image is flagged with probability about ``alpha``. The rate on a second,
disjoint fresh set (check set) measures that. A run is flagged when

- its copy rate exceeds the check set's by a one-sided Fisher exact test at ``flag_p``
  (per-sample test), or
- its samples sit closer to the training split than fresh images do, by the C_T test
  (:mod:`genbench.metrics.audit.datacopy`) at ``flag_p`` (distribution-level test).

Calibration and check images are held-out images left after the FID reference and the
real-data row; where the held-out split is too short for them, the validation slice's
images beyond those ``evaluate()`` receives (never trained on) are used, and the audit
says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from genbench.metrics.audit import datacopy, descriptor, mixes, ncc
from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest as key_digest

VERSION = 3  # 3: pool of train + validation + held-out, learned descriptor, mixes, C_T
STATS = ("desc_d", "desc_ratio", "ncc_d", "ncc_ratio", "half_d", "blend_d")
STAGE = {
    "desc_d": "descriptor",
    "desc_ratio": "descriptor",
    "ncc_d": "pixel",
    "ncc_ratio": "pixel",
    "half_d": "mosaic",
    "blend_d": "blend",
}
DEFINITION = (
    "a sample is a copy when, against a pool of every real image (training split, "
    "validation slice, held-out split), its learned-descriptor distance, its pixel NCC "
    "distance (flips, quarter turns, shifts up to max_shift px, intensity changes), the "
    "ratio of either to the second-best match, its best half-image match or its best "
    "two-image blend fit falls below the alpha/6 quantile of the same statistic on fresh "
    "held-out images; a run is flagged when its copy rate exceeds a disjoint fresh set's "
    "(one-sided Fisher exact test, p < flag_p) or when its samples sit closer to the "
    "training split than fresh images do (C_T test, p < flag_p)"
)


@dataclass(frozen=True)
class CopySettings:
    max_shift: int = 3  # pixels the NCC stage undoes; the descriptor learns up to side/4
    alpha: float = 0.01  # per-image false-positive rate the calibration aims at
    flag_p: float = 0.01  # significance of "this run copies" (both tests)
    neighbours: int = 16  # descriptor candidates handed to the pixel stage
    calibration: int = 1000  # at most this many fresh images in each of calibration and check
    min_per_cell: int = 20  # C_T: samples and fresh images a cell needs to count
    pixel: ncc.PixelSearch | None = None  # retrieval sizes and blocks (defaults)
    descriptor: descriptor.DescriptorSettings = field(default_factory=descriptor.DescriptorSettings)

    def search(self) -> ncc.PixelSearch:
        return self.pixel or ncc.PixelSearch(max_shift=self.max_shift)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pixel"] = self.search().to_dict()
        return d

    def result_key(self) -> dict[str, Any]:
        """What changes a statistic (block sizes change none)."""
        d = self.to_dict()
        d["pixel"] = {k: v for k, v in d["pixel"].items() if k not in ("chunk", "cpu_chunk")}
        return d


# -- the pool ---------------------------------------------------------------------------
@dataclass
class Pool:
    """Every real image a sample may copy, with where each came from."""

    images: torch.Tensor  # M uint8
    parts: list[tuple[str, int, int]]  # (split name, start, end) in pool order
    source_index: torch.Tensor  # M: index in its split's source

    def origin(self, pos: int) -> tuple[str, int]:
        for name, a, b in self.parts:
            if a <= pos < b:
                return name, int(self.source_index[pos])
        raise IndexError(pos)

    def offset(self, name: str) -> int:
        return next(a for n, a, _ in self.parts if n == name)

    def train_slice(self) -> slice:
        a, b = next((a, b) for n, a, b in self.parts if n == "train")
        return slice(a, b)


def make_pool(named: list[tuple[str, torch.Tensor, torch.Tensor]]) -> Pool:
    """Pool from (split name, uint8 images, source indices), in that order."""
    parts, start = [], 0
    for name, imgs, _ in named:
        parts.append((name, start, start + len(imgs)))
        start += len(imgs)
    return Pool(
        torch.cat([imgs for _, imgs, _ in named]),
        parts,
        torch.cat([idx for _, _, idx in named]),
    )


@dataclass
class PoolIndex:
    """What every query reuses: the descriptor, its pool embeddings and cells, the pixel index."""

    net: descriptor.CopyNet
    net_info: dict[str, Any]
    emb: torch.Tensor  # M x dim
    centroids: torch.Tensor  # k x dim, over the training split
    pixel: ncc.TrainIndex
    cached: dict[str, bool]
    net_sha: str = ""  # the descriptor's weights: cached statistics are keyed by it


def build_pool_index(
    pool: Pool, settings: CopySettings, *, describe: dict[str, Any], device: torch.device, k: int
) -> PoolIndex:
    train = pool.images[pool.train_slice()]
    net, info = descriptor.get_descriptor(
        train, describe=describe, device=device, settings=settings.descriptor
    )
    net_sha = sha256_tensor(
        torch.cat([p.detach().float().flatten() for p in net.state_dict().values()])
    )
    key = key_digest({"v": VERSION, "net": net_sha, "pool": sha256_tensor(pool.images), "k": k})
    path = cache_root() / "copies" / f"pool-{key}.pt"
    hit = path.is_file()
    emb = cent = None
    if hit:
        try:
            d = load_torch(path)
            emb, cent = d["emb"].float(), d["centroids"].float()
        except (OSError, RuntimeError, KeyError):
            hit = False
    if emb is None or cent is None:
        emb = descriptor.embed(net, pool.images, settings=settings.descriptor, device=device)
        cent = datacopy.kmeans(emb[pool.train_slice()], k).cpu()
        save_torch(path, {"emb": emb.half(), "centroids": cent})
        emb = emb.half().float()  # the same values warm and cold
    pixel, pix_hit = ncc.build_index(pool.images, settings.search(), device=device)
    return PoolIndex(
        net,
        info,
        emb,
        cent,
        pixel,
        {"descriptor": bool(info.get("cached")), "pool": hit, "pixel": pix_hit},
        net_sha,
    )


# -- statistics of a query set ----------------------------------------------------------
@dataclass
class QueryStats:
    stats: dict[str, torch.Tensor]  # name -> N (lower = more like a copy)
    desc_index: torch.Tensor  # N: nearest pool image in descriptor space
    ncc: ncc.Matches
    mix: mixes.MixMatches
    train_dist: torch.Tensor  # N: descriptor distance to the nearest *training* image
    cell: torch.Tensor  # N: C_T cell

    def pack(self) -> dict[str, Any]:
        return {
            "stats": self.stats,
            "desc_index": self.desc_index,
            "ncc": {
                "ncc1": self.ncc.ncc1,
                "ncc2": self.ncc.ncc2,
                "index": self.ncc.index,
                "transform": list(self.ncc.transform),
            },
            "mix": asdict(self.mix),
            "train_dist": self.train_dist,
            "cell": self.cell,
        }

    @staticmethod
    def unpack(d: dict[str, Any]) -> QueryStats:
        n = d["ncc"]
        return QueryStats(
            dict(d["stats"]),
            d["desc_index"],
            ncc.Matches(n["ncc1"], n["ncc2"], n["index"], list(n["transform"])),
            mixes.MixMatches(**d["mix"]),
            d["train_dist"],
            d["cell"],
        )


def _nearest(
    q: torch.Tensor,
    base: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None,
    *,
    device: torch.device,
    chunk: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k cosine similarity of unit vectors, in blocks of the base on ``device``;
    ``exclude``: a base position per query (-1: none). Returns CPU tensors."""
    n = len(q)
    q = q.to(device)
    ex = exclude.to(device) if exclude is not None else None
    best_v = torch.full((n, k), -2.0, device=device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=device)
    for s in range(0, len(base), chunk):
        sim = q @ base[s : s + chunk].to(device).T
        pos = torch.arange(s, s + sim.shape[1], device=device)
        if ex is not None:
            sim = torch.where(pos[None] == ex[:, None], -2.0, sim)
        v, i = torch.cat([best_v, sim], 1).topk(k, 1)
        best_i = torch.cat([best_i, pos.expand(n, -1)], 1).gather(1, i)
        best_v = v
    return best_v.cpu(), best_i.cpu()


def query_stats(
    images: torch.Tensor,
    pool: Pool,
    index: PoolIndex,
    settings: CopySettings,
    *,
    device: torch.device,
    exclude: torch.Tensor | None = None,
) -> QueryStats:
    """All six statistics of uint8 query images (``exclude``: each query's own pool position)."""
    q = descriptor.embed(index.net, images, settings=settings.descriptor, device=device)
    q = q.half().float()  # the pool's precision: a copy's distance is then exactly 0
    k = min(settings.neighbours, len(pool.images))
    sim, near = _nearest(q, index.emb, k, exclude, device=device)
    d1 = (1 - sim[:, 0]).clamp_min(0).double()
    d2 = (1 - sim[:, 1]).clamp_min(1e-6).double() if k > 1 else torch.ones_like(d1)
    m = ncc.match(
        images,
        pool.images,
        index.pixel,
        settings.search(),
        device=device,
        extra=near,
        exclude=exclude,
    )
    mx = mixes.match_mixes(
        images, pool.images, device=device, first_parents=near[:, :4], exclude=exclude
    )
    tr = pool.train_slice()
    tsim, _ = _nearest(q, index.emb[tr], 1, None, device=device)
    return QueryStats(
        {
            "desc_d": d1,
            "desc_ratio": d1 / d2,
            "ncc_d": m.distance,
            "ncc_ratio": m.ratio,
            "half_d": mx.half_d,
            "blend_d": mx.blend_d,
        },
        near[:, 0],
        m,
        mx,
        (1 - tsim[:, 0]).clamp_min(0).double(),
        datacopy.assign_cells(q, index.centroids),
    )


# -- calibration and the verdict ------------------------------------------------------------
@dataclass
class Calibration:
    thresholds: dict[str, float]
    n: int

    def caught(self, s: QueryStats) -> dict[str, torch.Tensor]:
        return {k: s.stats[k] < t for k, t in self.thresholds.items()}

    def flags(self, s: QueryStats) -> torch.Tensor:
        c = list(self.caught(s).values())
        out = torch.zeros_like(c[0])
        for x in c:
            out |= x
        return out


def calibrate(held: QueryStats, alpha: float) -> Calibration:
    """Thresholds at the alpha/6 quantile of each statistic over fresh held-out images."""
    q = alpha / len(STATS)
    return Calibration(
        {k: float(torch.quantile(held.stats[k].double(), q)) for k in STATS},
        len(held.train_dist),
    )


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal one)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # At k = 0 or k = n the bound is exactly 0 or 1 (not a float residue of it).
    return (0.0 if k == 0 else max(0.0, centre - half)), (
        1.0 if k == n else min(1.0, centre + half)
    )


def excess_p_value(k: int, n: int, k_ref: int, n_ref: int) -> float:
    """One-sided Fisher exact test: is k/n greater than k_ref/n_ref?"""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k, n - k], [k_ref, n_ref - k_ref]], alternative="greater")[1])


def verdict(
    gen: QueryStats,
    cal: Calibration,
    check: QueryStats,
    fresh: QueryStats,
    settings: CopySettings,
    *,
    k: int,
) -> dict[str, Any]:
    flags = cal.flags(gen)
    n = len(flags)
    kk = int(flags.sum())
    kc, nc = int(cal.flags(check).sum()), len(check.train_dist)
    p = excess_p_value(kk, n, kc, nc)
    lo, hi = wilson(kk, n)
    hlo, hhi = wilson(kc, nc)
    caught = cal.caught(gen)
    by_stage: dict[str, torch.Tensor] = {}
    for name, hit in caught.items():  # samples each stage caught (by any of its statistics)
        st = STAGE[name]
        by_stage[st] = by_stage[st] | hit if st in by_stage else hit
    stages = {st: int(hit.sum()) for st, hit in by_stage.items()}
    ct = datacopy.c_t_test(
        gen.train_dist,
        gen.cell,
        fresh.train_dist,
        fresh.cell,
        k=k,
        min_per_cell=settings.min_per_cell,
        flag_p=settings.flag_p,
    )
    per_sample = bool(p < settings.flag_p and kk > 0)
    return {
        "rate": kk / n if n else None,
        "rate_ci95": [lo, hi],
        "n_copies": kk,
        "n_samples": n,
        "heldout_rate": kc / nc if nc else None,
        "heldout_rate_ci95": [hlo, hhi],
        "n_heldout_check": nc,
        "n_heldout_calibration": cal.n,
        "p_value": p,
        "flagged": per_sample or bool(ct["flagged"]),
        "flagged_by": [x for x, on in (("per-sample", per_sample), ("C_T", ct["flagged"])) if on],
        "caught_by_stage": stages,
        "thresholds": cal.thresholds,
        "c_t": ct,
        "median_train_distance": {
            "samples": float(gen.train_dist.median()) if n else None,
            "fresh": float(fresh.train_dist.median()) if len(fresh.train_dist) else None,
        },
    }


def concat_stats(a: QueryStats, b: QueryStats) -> QueryStats:
    """Two fresh sets as one (statistics, distances and cells; the matches are a's)."""
    return QueryStats(
        {k: torch.cat([a.stats[k], b.stats[k]]) for k in STATS},
        torch.cat([a.desc_index, b.desc_index]),
        a.ncc,  # not used for the fresh union
        a.mix,
        torch.cat([a.train_dist, b.train_dist]),
        torch.cat([a.cell, b.cell]),
    )


# -- files a person reads ---------------------------------------------------------------------
def _pair_record(i: int, gen: QueryStats, cal: Calibration, pool: Pool) -> dict[str, Any]:
    caught = [k for k, hit in cal.caught(gen).items() if bool(hit[i])]
    stage = STAGE[caught[0]] if caught else None
    if stage == "descriptor":
        pos, how = int(gen.desc_index[i]), "learned descriptor"
    elif stage == "mosaic":
        pos, how = int(gen.mix.half_index[i]), f"{gen.mix.half_region[i]} half"
    elif stage == "blend":
        pos, how = (
            int(gen.mix.blend_pair[i, 0]),
            "blend with " + "{} #{}".format(*pool.origin(int(gen.mix.blend_pair[i, 1]))),
        )
    else:
        pos, how = int(gen.ncc.index[i]), gen.ncc.transform[i]
    split, src = pool.origin(pos)
    return {
        "sample": i,
        "split": split,
        "source_index": src,
        "pool_index": pos,
        "transform": how,
        "ncc": round(float(gen.ncc.ncc1[i]), 5),
        "desc_d": round(float(gen.stats["desc_d"][i]), 5),
        "copy": bool(caught),
        "caught_by": sorted({STAGE[c] for c in caught}),
    }


def pair_files(
    gen_images: torch.Tensor,
    gen: QueryStats,
    cal: Calibration,
    pool: Pool,
    *,
    top_k: int = 8,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The closest pairs shown (copies first) and the files: copies.json (every sample's
    best match) and copies.png (the shown pairs tiled: sample | pool image)."""
    from genbench.images import tile_tensor

    flags = cal.flags(gen)
    order = sorted(
        range(len(flags)), key=lambda i: (not bool(flags[i]), float(gen.ncc.distance[i]))
    )
    pairs = [_pair_record(i, gen, cal, pool) for i in order]
    files: dict[str, Any] = {"copies.json": {"definition": DEFINITION, "pairs": pairs}}
    shown = pairs[:top_k]
    if shown:
        rows = []
        for p in shown:
            a, b = gen_images[p["sample"]], pool.images[p["pool_index"]]
            if a.shape[0] != b.shape[0]:
                a, b = a.expand(3, -1, -1) if a.shape[0] == 1 else a, b.expand(3, -1, -1)
            rows += [a, b]
        grid = torch.stack(rows)
        if grid.shape[-1] < 64:  # enlarge small images (nearest) so the pairs can be inspected
            f = 64 // grid.shape[-1]
            grid = grid.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2)
        files["copies.png"] = tile_tensor(grid, nrow=2)
    return shown, files
