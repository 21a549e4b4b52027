"""The copy audit's pool of real images and the statistics of a query set.

Every sample is searched in a **pool** of every real image a generator could have
seen or replayed: the training split, the validation slice that ``evaluate()``
receives, and the whole held-out split (the FID reference included). Three stages,
each exact over the pool:

1. **learned descriptor** (:mod:`genbench.metrics.audit.descriptor`): an embedding
   trained on the pool to be blind to compositions of edits (shifts, rotations, zooms,
   crops, smooth warps, flips, erasing, blends of up to four images, mosaics of any
   layout, photometric edits); exact nearest neighbours by cosine. Statistics:
   ``desc_d = 1 - cos`` to the nearest pool image, ``desc_ratio`` = that over the
   distance to the second nearest;
2. **pixel NCC** (:mod:`genbench.metrics.audit.ncc`): normalized cross-correlation
   under flips, quarter turns, shifts and intensity changes, verified on the pixel
   stage's own shortlist plus the descriptor's neighbours. ``ncc_d``, ``ncc_ratio``;
3. **mixes** (:mod:`genbench.metrics.audit.mixes`): exact half-image matches and
   multi-piece mosaics (``half_d``, ``piece_d``), and least-squares fits of two and of
   up to four images (blends: ``blend_d``, ``blendk_d``).

The verdict (:mod:`genbench.metrics.audit.verdict`) calibrates a threshold per
statistic on fresh held-out images and estimates the copied fraction per sample and by
membership (:mod:`genbench.metrics.audit.membership`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

import genbench.metrics.audit.datacopy as datacopy
import genbench.metrics.audit.descriptor as descriptor
import genbench.metrics.audit.membership as membership
import genbench.metrics.audit.mixes as mixes
import genbench.metrics.audit.ncc as ncc
from genbench.metrics.audit.settings import VERSION, CopySettings
from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest as key_digest


# -- the pool ---------------------------------------------------------------------------
@dataclass
class Pool:
    """Every real image a sample may copy, with where each came from."""

    images: torch.Tensor  # M uint8
    parts: list[tuple[str, int, int]]  # (split name, start, end) in pool order
    source_index: torch.Tensor  # M: index in its split's source
    # The mix stage and pixel membership both read the pool's canonical images; made once
    # (a few seconds at 70k images) and kept on the CPU while the pool lives.
    _derived: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def full(self, batch: int = 8192) -> torch.Tensor:
        """M x S x S canonical grey images (:func:`mixes.full_vectors`), made once."""
        if "full" not in self._derived:
            cpu = torch.device("cpu")
            self._derived["full"] = torch.cat(
                [
                    mixes.full_vectors(self.images[s : s + batch], cpu)
                    for s in range(0, len(self.images), batch)
                ]
            )
        return self._derived["full"]

    def pixels(self, batch: int = 8192) -> torch.Tensor:
        """M unit vectors of the centred canonical pixels (pixel-space membership)."""
        if "pixels" not in self._derived:
            full = self.full()
            self._derived["pixels"] = torch.cat(
                [membership.pixel_vectors(full[s : s + batch]) for s in range(0, len(full), batch)]
            )
        return self._derived["pixels"]

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
    # Trained on the whole pool, training and non-training images alike: the descriptor
    # then treats both the same, which the membership test's exchangeability needs.
    net, info = descriptor.get_descriptor(
        pool.images, describe=describe, device=device, settings=settings.descriptor
    )
    net_sha = sha256_tensor(
        torch.cat([p.detach().float().flatten() for p in net.state_dict().values()])
    )
    key_of = {"v": VERSION, "net": net_sha, "pool": sha256_tensor(pool.images), "k": k}
    if any(name == "unseen" for name, _, _ in pool.parts):
        # data.train_subset: one pool, many trained parts; the cells are the trained part's
        # (without a subset the parts follow from the images, and older keys stay valid)
        key_of["parts"] = pool.parts
    key = key_digest(key_of)
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
    emb: torch.Tensor | None = None  # N x dim descriptors (membership; not cached)

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

    def select(self, idx: torch.Tensor) -> QueryStats:
        """The statistics of the queries at ``idx`` (each query's are its own)."""
        rows = idx.tolist()

        def take(v: Any) -> Any:
            return v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in rows]

        return QueryStats(
            {k: v[idx] for k, v in self.stats.items()},
            self.desc_index[idx],
            ncc.Matches(*(take(getattr(self.ncc, f.name)) for f in fields(self.ncc))),
            mixes.MixMatches(*(take(getattr(self.mix, f.name)) for f in fields(self.mix))),
            self.train_dist[idx],
            self.cell[idx],
            None if self.emb is None else self.emb[idx],
        )

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
        images,
        pool.images,
        device=device,
        first_parents=near[:, :4],
        exclude=exclude,
        pool_full=pool.full(),
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
            "piece_d": mx.piece_d,
            "blend_d": mx.blend_d,
            "blendk_d": mx.blendk_d,
        },
        near[:, 0],
        m,
        mx,
        (1 - tsim[:, 0]).clamp_min(0).double(),
        datacopy.assign_cells(q, index.centroids),
        q,
    )
