"""Copy detection: does a generator return (transformed) training images?

Every sample is compared with **every** training image, under the cheap edits an
adversary (or an over-fitted model) could apply to a training image:

- the 8 flips and quarter turns (the dihedral group: mirror, upside down, rotate);
- translations of up to ``max_shift`` pixels, whatever fills the uncovered border;
- brightness, contrast and inversion (any affine change of intensity:
  comparisons are normalized cross-correlations, sign ignored);
- mild noise and blur (images are compared after a small blur, and a copy's
  match is judged relative to its second-best match, as in Gu et al. 2023);
- colour edits that keep the mean over channels (channel swaps, greyscale).

Search, exact over the whole training split and chunked so it scales to GPUs:
1. retrieval: each query's 8 dihedral variants are matched against every
   training image by two cheap descriptors, a translation-tolerant low-frequency
   Fourier magnitude of the windowed centre crop and a coarse pooled centre crop
   at 9 offsets; the best candidates of each are kept;
2. verification: the exact normalized cross-correlation (NCC) of the query's
   centre crop with every shifted window of each candidate, for the 8 variants.

Statistic per query (Carlini et al. 2023 / Gu et al. 2023): ``d1 = 1 - NCC`` to
the best training image and ``ratio = d1 / d2`` with ``d2`` the distance to the
best *other* training image. A query is a copy when ``d1`` or ``ratio`` falls
below the ``alpha / 2`` quantile of the same statistic over held-out real
images (calibration set), so a fresh image is flagged with probability about
``alpha``. The rate on a second, disjoint held-out set measures that
false-positive rate; a run is flagged when its copy rate exceeds the held-out
rate by a one-sided Fisher exact test at ``flag_p``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.metrics.units import UnitInputs, UnitResult
from genbench.utils.files import write_json
from genbench.utils.naming import digest as key_digest

#: Bump when the statistic changes: cached descriptors and calibrations are keyed by it.
VERSION = 2  # 2: window sums from an integral image (same values up to rounding)
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
DEFINITION = (
    "a sample is a copy when its normalized cross-correlation distance to its best-matching "
    "training image (searched over the whole training split, under flips, quarter turns, shifts "
    "of up to max_shift px, brightness/contrast/inversion) or the ratio of that distance to the "
    "second-best training image's falls below the alpha/2 quantile of the same statistic on "
    "held-out real images; a run is flagged when its copy rate exceeds the rate on a disjoint "
    "held-out set (one-sided Fisher exact test, p < flag_p)"
)


@dataclass(frozen=True)
class CopySettings:
    max_shift: int = 3  # pixels; the effective shift is capped at resolution/4 - 1
    alpha: float = 0.01  # per-image false-positive rate the calibration aims at
    candidates: int = 48  # per query, from the Fourier descriptor
    spatial_candidates: int = 16  # per query, from the pooled descriptor
    flag_p: float = 0.01  # significance of "this run copies"
    chunk: int = 65536  # training images per retrieval block on CUDA (bounds memory at 1M)
    # On the CPU small blocks keep the similarity block in cache: 1024 searched 60k images
    # 1.7x faster than one 65536 block on 2 cores. Neither changes a result (exact search).
    cpu_chunk: int = 1024

    def chunk_for(self, device: torch.device) -> int:
        return self.chunk if device.type == "cuda" else self.cpu_chunk

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- image preparation -------------------------------------------------------------------
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
    """Retrieval descriptors of every training image (cached on disk: the warm path)."""

    fourier: torch.Tensor  # M x Df, float16
    pooled: torch.Tensor  # M x Dp, float16
    resolution: int
    shift: int


def build_index(
    train_images: torch.Tensor,
    settings: CopySettings,
    *,
    device: torch.device,
    use_cache: bool = True,
) -> tuple[TrainIndex, bool]:
    """Descriptors of all training images, cached by the images' hash. Returns (index, cache hit)."""
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
    ncc1: torch.Tensor  # N: best |NCC| to a training image
    ncc2: torch.Tensor  # N: best |NCC| to any other training image
    index: torch.Tensor  # N: position of the best match in the training set
    transform: list[str]  # N: how the training image was edited to give the query

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
        v, i = torch.cat([best_v, sim], 1).topk(k, 1)
        best_i = torch.cat([best_i, torch.arange(s, s + len(b), device=q.device).expand(n, -1)], 1)
        best_i = best_i.gather(1, i)
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
    settings: CopySettings,
    *,
    device: torch.device,
    batch: int = 64,
) -> Matches:
    """Best and second-best training image of each uint8 query image (whole training set)."""
    desc = _Descriptors(index.resolution, index.shift)
    four_base = index.fourier.to(device)
    pool_base = index.pooled.to(device)
    out1, out2, outi, codes = [], [], [], []
    for s in range(0, len(queries), batch):
        qx = canonical(queries[s : s + batch], device)
        var = dihedral(qx)  # n x 8 x 1 x H x W
        a = _topk_similar(
            desc.fourier(var),
            four_base,
            settings.candidates,
            chunk=settings.chunk_for(qx.device),
            absolute=False,
        )
        pooled = torch.cat(
            [desc.pooled(var, dy, dx) for dy in desc.offsets for dx in desc.offsets], 1
        )
        b = _topk_similar(
            pooled,
            pool_base,
            settings.spatial_candidates,
            chunk=settings.chunk_for(qx.device),
            absolute=True,
        )
        cand = torch.cat([a, b], 1)
        ncc, code = _verify(qx, cand, train_images, index.shift)
        # A training image found by both descriptors counts once (else it is its own runner-up).
        cs, order = cand.sort(1)
        dup = torch.zeros_like(cs, dtype=torch.bool)
        dup[:, 1:] = cs[:, 1:] == cs[:, :-1]
        ncc = ncc.scatter(1, order, torch.where(dup, -1.0, ncc.gather(1, order)))
        top, pos = ncc.topk(min(2, ncc.shape[1]), 1)
        out1.append(top[:, 0].cpu())
        out2.append((top[:, 1] if top.shape[1] > 1 else torch.zeros_like(top[:, 0])).cpu())
        outi.append(cand.gather(1, pos[:, :1])[:, 0].cpu())
        codes += code.gather(1, pos[:, :1])[:, 0].tolist()
    return Matches(
        torch.cat(out1).double(),
        torch.cat(out2).double(),
        torch.cat(outi),
        [_describe_code(c, index.shift, index.resolution) for c in codes],
    )


# -- calibration and the verdict ------------------------------------------------------------
@dataclass
class Calibration:
    distance: float  # d1 threshold
    ratio: float  # d1/d2 threshold
    n: int

    def flags(self, m: Matches) -> torch.Tensor:
        return (m.distance < self.distance) | (m.ratio < self.ratio)


def calibrate(held: Matches, alpha: float) -> Calibration:
    """Thresholds at the alpha/2 quantile of each statistic over held-out real images."""
    q = alpha / 2
    return Calibration(
        float(torch.quantile(held.distance, q)),
        float(torch.quantile(held.ratio, q)),
        len(held.ncc1),
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
    gen: Matches, cal: Calibration, check: Matches, settings: CopySettings
) -> dict[str, Any]:
    flags = cal.flags(gen)
    k, n = int(flags.sum()), len(flags)
    kc, nc = int(cal.flags(check).sum()), len(check.ncc1)
    p = excess_p_value(k, n, kc, nc)
    lo, hi = wilson(k, n)
    hlo, hhi = wilson(kc, nc)
    return {
        "rate": k / n if n else None,
        "rate_ci95": [lo, hi],
        "n_copies": k,
        "n_samples": n,
        "heldout_rate": kc / nc if nc else None,
        "heldout_rate_ci95": [hlo, hhi],
        "n_heldout_check": nc,
        "n_heldout_calibration": cal.n,
        "p_value": p,
        "flagged": bool(p < settings.flag_p and k > 0),
        "thresholds": {"distance": cal.distance, "ratio": cal.ratio},
    }


def save_pairs(
    gen_images: torch.Tensor,
    train_images: torch.Tensor,
    gen: Matches,
    flags: torch.Tensor,
    train_source_index: torch.Tensor,
    out_dir: Path,
    *,
    top_k: int = 8,
) -> list[dict[str, Any]]:
    """copies.json (every sample's best match) and copies.png (the closest pairs:
    sample | training image, flagged ones first)."""
    from genbench.images import save_grid

    order = sorted(range(len(flags)), key=lambda i: (not bool(flags[i]), float(gen.distance[i])))
    pairs = [
        {
            "sample": i,
            "train_index": int(train_source_index[gen.index[i]]),
            "transform": gen.transform[i],
            "ncc": round(float(gen.ncc1[i]), 5),
            "ratio": round(float(gen.ratio[i]), 5),
            "copy": bool(flags[i]),
        }
        for i in order
    ]
    write_json(out_dir / "copies.json", {"definition": DEFINITION, "pairs": pairs})
    shown = order[:top_k]
    if shown:
        rows = []
        for i in shown:
            a, b = gen_images[i], train_images[gen.index[i]]
            if a.shape[0] != b.shape[0]:
                a, b = a.expand(3, -1, -1) if a.shape[0] == 1 else a, b.expand(3, -1, -1)
            rows += [a, b]
        grid = torch.stack(rows)
        if grid.shape[-1] < 64:  # enlarge small images (nearest) so the pairs can be inspected
            f = 64 // grid.shape[-1]
            grid = grid.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2)
        save_grid(grid, out_dir / "copies.png", nrow=2)
    return pairs[: min(top_k, len(pairs))]


def copy_audit(
    gen_images: torch.Tensor,
    *,
    train_images: torch.Tensor,
    train_source_index: torch.Tensor,
    calibration_images: torch.Tensor,
    check_images: torch.Tensor,
    settings: CopySettings,
    device: torch.device,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """The copy audit of one image set (see the module docstring)."""
    t0 = time.perf_counter()
    index, hit = build_index(train_images, settings, device=device)
    t_index = time.perf_counter() - t0
    held, t_held, held_hit = _heldout_matches(
        train_images, calibration_images, check_images, index, settings, device=device
    )
    t1 = time.perf_counter()
    gen = match(gen_images, train_images, index, settings, device=device)
    t_gen = time.perf_counter() - t1
    cal = calibrate(held[0], settings.alpha)
    out = verdict(gen, cal, held[1], settings)
    flags = cal.flags(gen)
    out.update(
        definition=DEFINITION,
        method=f"copies v{VERSION}",
        settings=settings.to_dict(),
        shift_searched=index.shift,
        n_train=len(train_images),
        transforms=list(TRANSFORMS),
        median_ncc_samples=float(gen.ncc1.median()) if len(gen.ncc1) else None,
        median_ncc_heldout=float(held[1].ncc1.median()) if len(held[1].ncc1) else None,
        seconds={
            "index": round(t_index, 2),
            "heldout": round(t_held, 2),
            "samples": round(t_gen, 2),
            "index_cached": hit,
            "heldout_cached": held_hit,
        },
    )
    if out_dir is not None:
        out["pairs"] = save_pairs(gen_images, train_images, gen, flags, train_source_index, out_dir)
        out["image"] = "copies.png"
    return out


def _heldout_matches(
    train_images: torch.Tensor,
    calibration_images: torch.Tensor,
    check_images: torch.Tensor,
    index: TrainIndex,
    settings: CopySettings,
    *,
    device: torch.device,
) -> tuple[tuple[Matches, Matches], float, bool]:
    """The calibration and check sets' matches, cached: they are the same for every run."""
    t0 = time.perf_counter()
    key = key_digest(
        {
            "v": VERSION,
            "train": sha256_tensor(train_images),
            "cal": sha256_tensor(calibration_images),
            "check": sha256_tensor(check_images),
            # Block sizes change no match: a key without them survives tuning them.
            "settings": {
                k: v for k, v in settings.to_dict().items() if k not in ("chunk", "cpu_chunk")
            },
        }
    )
    path = cache_root() / "copies" / f"heldout-{key}.pt"
    if path.exists():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            return (
                (_unpack(d["cal"]), _unpack(d["check"])),
                time.perf_counter() - t0,
                True,
            )
        except (OSError, RuntimeError, KeyError):
            pass
    cal = match(calibration_images, train_images, index, settings, device=device)
    chk = match(check_images, train_images, index, settings, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"cal": _pack(cal), "check": _pack(chk)}, tmp)
    tmp.replace(path)
    return (cal, chk), time.perf_counter() - t0, False


def _pack(m: Matches) -> dict[str, Any]:
    return {"ncc1": m.ncc1, "ncc2": m.ncc2, "index": m.index, "transform": list(m.transform)}


def _unpack(d: dict[str, Any]) -> Matches:
    return Matches(d["ncc1"], d["ncc2"], d["index"], list(d["transform"]))


def copies_unit(x: UnitInputs) -> UnitResult:
    """Every sample against the whole training split, calibrated on held-out images."""
    cfg = x.metrics_cfg
    parts = x.parts
    if len(parts.calibration) < 2 or len(parts.check) < 1:
        why = "too few held-out images left after the reference to calibrate the audit"
        return UnitResult(
            unavailable={"copy_rate": why},
            scores={"copy_rate": None},
            blocks={"copies": {"rate": None, "flagged": False, "unavailable": why}},
        )
    audit = copy_audit(
        x.images,
        train_images=x.bundle.train.images,
        train_source_index=x.bundle.train.source_index,
        calibration_images=parts.calibration.images,
        check_images=parts.check.images,
        settings=CopySettings(
            max_shift=cfg.copy_max_shift, alpha=cfg.copy_alpha, flag_p=cfg.copy_flag_p
        ),
        device=x.device,
        out_dir=x.out_dir,
    )
    return UnitResult(scores={"copy_rate": audit["rate"]}, blocks={"copies": audit})
