"""The copy audit of one image set (:func:`copy_audit`) and as a metric unit: the pool of
real images and the fresh images, from a scoring call's data."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import genbench.metrics.audit.nn_ratio as nn_ratio
from genbench.metrics.audit.copies import (
    Pool,
    PoolIndex,
    QueryStats,
    build_pool_index,
    make_pool,
    query_stats,
)
from genbench.metrics.audit.descriptor import DescriptorSettings, drawn_seed
from genbench.metrics.audit.membership import (
    Membership,
    distinct_reading,
    nearest_is_train,
    pixel_vectors,
)
from genbench.metrics.audit.mixes import full_vectors
from genbench.metrics.audit.ncc import TRANSFORMS
from genbench.metrics.audit.pairs import pair_files
from genbench.metrics.audit.settings import DEFINITION, VERSION, CopySettings
from genbench.metrics.audit.verdict import Calibration, calibrate, concat_stats, verdict
from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.metrics.protocol import split_description
from genbench.metrics.units import UnitInputs, UnitResult
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest as key_digest


@dataclass
class FreshSets:
    """Fresh real images (never trained on) for calibration and the check, with their
    pool positions (a fresh image never matches itself) and where they came from."""

    calibration: torch.Tensor
    calibration_pos: torch.Tensor
    check: torch.Tensor
    check_pos: torch.Tensor
    source: str


def cells_for(n_samples: int, n_fresh: int, min_per_cell: int) -> int:
    """C_T cells: as many as keep about 2.5 x min_per_cell samples and fresh images in each."""
    return max(1, min(50, min(n_samples, n_fresh) // int(2.5 * min_per_cell)))


def fresh_stats(
    fresh: FreshSets,
    pool: Pool,
    index: PoolIndex,
    settings: CopySettings,
    *,
    device: torch.device,
) -> tuple[QueryStats, QueryStats, bool]:
    """The calibration and check sets' statistics, cached: they are the same for every run."""
    key = key_digest(
        {
            "v": VERSION,
            "pool": sha256_tensor(pool.images),
            "net": index.net_sha,
            "centroids": sha256_tensor(index.centroids),
            "cal": sha256_tensor(fresh.calibration_pos),
            "check": sha256_tensor(fresh.check_pos),
            "settings": settings.result_key(),
        }
    )
    path = cache_root() / "copies" / f"fresh-{key}.pt"
    if path.is_file():
        try:
            d = load_torch(path)
            return QueryStats.unpack(d["cal"]), QueryStats.unpack(d["check"]), True
        except (OSError, RuntimeError, KeyError, TypeError):
            pass
    cal = query_stats(
        fresh.calibration, pool, index, settings, device=device, exclude=fresh.calibration_pos
    )
    chk = query_stats(fresh.check, pool, index, settings, device=device, exclude=fresh.check_pos)
    save_torch(path, {"cal": cal.pack(), "check": chk.pack()})
    return cal, chk, False


def copy_audit(
    gen_images: torch.Tensor,
    *,
    pool: Pool,
    fresh: FreshSets,
    settings: CopySettings,
    device: torch.device,
    describe: dict[str, Any],
    exclude: torch.Tensor | None = None,
    files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The copy audit of one image set (see the module docstring). ``exclude``: each
    image's own pool position when the set is real images from the pool (the real-data row).
    ``files``: receives copies.json and copies.png (the result then lists the pairs shown)."""
    ctx = _AuditContext(pool, fresh, settings, device, describe)
    ((out, gen, calib),) = _audit_sets(ctx, {"": (gen_images, exclude)}).values()
    if files is not None:
        out["pairs"], made = pair_files(gen_images, gen, calib, pool)
        files.update(made)
        out["image"] = "copies.png"
    return out


def copy_audits(
    sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    *,
    pool: Pool,
    fresh: FreshSets,
    settings: CopySettings,
    device: torch.device,
    describe: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """The copy audits of several image sets against one pool: name -> (uint8 images, each
    image's own pool position or None) gives name -> the result :func:`copy_audit` gives for
    that set alone. Their images search the pool together (one pass serves them all); a
    query's statistics are its own, so each set's verdict is the same as alone."""
    ctx = _AuditContext(pool, fresh, settings, device, describe)
    return {name: out for name, (out, _, _) in _audit_sets(ctx, sets).items()}


@dataclass
class _AuditContext:
    pool: Pool
    fresh: FreshSets
    settings: CopySettings
    device: torch.device
    describe: dict[str, Any]


def _audit_sets(
    ctx: _AuditContext, sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]]
) -> dict[str, tuple[dict[str, Any], QueryStats, Calibration]]:
    """Each set's (result, statistics, calibration); sets of sizes that share a C_T cell
    count are searched together."""
    n_fresh = len(ctx.fresh.calibration) + len(ctx.fresh.check)
    by_cells: dict[int, list[str]] = {}
    for name, (images, _) in sets.items():
        by_cells.setdefault(cells_for(len(images), n_fresh, ctx.settings.min_per_cell), []).append(
            name
        )
    out = {}
    for k, names in by_cells.items():
        out.update(_audit_group(ctx, {n: sets[n] for n in names}, k=k))
    return {name: out[name] for name in sets}


def _audit_group(
    ctx: _AuditContext, sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]], *, k: int
) -> dict[str, tuple[dict[str, Any], QueryStats, Calibration]]:
    pool, settings, device = ctx.pool, ctx.settings, ctx.device
    t0 = time.perf_counter()
    index = build_pool_index(pool, settings, describe=ctx.describe, device=device, k=k)
    t_index = time.perf_counter() - t0
    t1 = time.perf_counter()
    cal, chk, fresh_hit = fresh_stats(ctx.fresh, pool, index, settings, device=device)
    t_fresh = time.perf_counter() - t1
    t2 = time.perf_counter()
    images = torch.cat([im for im, _ in sets.values()])
    owns = [torch.full((len(im),), -1) if ex is None else ex for im, ex in sets.values()]
    any_own = any(ex is not None for _, ex in sets.values())
    every = query_stats(
        images, pool, index, settings, device=device, exclude=torch.cat(owns) if any_own else None
    )
    t_gen = time.perf_counter() - t2
    calib = calibrate(cal, settings.alpha)
    fresh_union = concat_stats(cal, chk)
    common = dict(
        definition=DEFINITION,
        method=f"copies v{VERSION}",
        settings=settings.to_dict(),
        shift_searched=index.pixel.shift,
        pool={name: b - a for name, a, b in pool.parts},
        fresh_source=ctx.fresh.source,
        transforms=list(TRANSFORMS),
        descriptor={**index.net_info, "dim": settings.descriptor.dim},
    )
    seconds = {
        "index": round(t_index, 2),
        "fresh": round(t_fresh, 2),
        "samples": round(t_gen, 2),
        "cached": {**index.cached, "fresh": fresh_hit},
    }
    if len(sets) > 1:
        seconds["sets_searched_together"] = len(sets)  # "samples" is all of theirs
    ratio_of = _nn_ratio_reader(ctx)
    results, start = {}, 0
    for (name, (im, ex)), own in zip(sets.items(), owns, strict=True):
        gen = every.select(torch.arange(start, start + len(im)))
        start += len(im)
        members = membership(
            im, gen, pool, index, own=own if ex is not None else None, device=device
        )
        out = verdict(gen, calib, chk, fresh_union, settings, k=k, membership=members)
        out.update(common, seconds=seconds)
        out["nn_ratio"] = ratio_of(im)
        results[name] = (out, gen, calib)
    return results


def _nn_ratio_reader(ctx: _AuditContext) -> Callable[[torch.Tensor], dict[str, Any]]:
    """Gu et al.'s criterion for a set of images (:mod:`genbench.metrics.audit.nn_ratio`),
    against the images the model trained on; the fresh check set's ratios made once."""
    train = ctx.pool.images[ctx.pool.train_slice()]
    if len(train) < 2:
        return lambda _: {
            "criterion": nn_ratio.CRITERION,
            "unavailable": "fewer than 2 training images",
        }
    fresh = nn_ratio.nn_ratios(ctx.fresh.check, train, device=ctx.device)
    return lambda images: nn_ratio.nn_ratio_block(
        nn_ratio.nn_ratios(images, train, device=ctx.device), fresh
    )


def membership(
    images: torch.Tensor,
    gen: QueryStats,
    pool: Pool,
    index: PoolIndex,
    *,
    own: torch.Tensor | None,
    device: torch.device,
) -> list[Membership]:
    """How often each sample's nearest real image is a training image, in the descriptor's
    space and in pixels (:mod:`genbench.metrics.audit.membership`); ``own``: each audited
    image's own pool position (-1: none), never its own match."""
    is_train = torch.zeros(len(pool.images), dtype=torch.bool)
    is_train[pool.train_slice()] = True
    out = []
    spaces = (
        ("descriptor", gen.emb, index.emb),
        ("pixels", pixel_vectors(full_vectors(images, device)), pool.pixels()),
    )
    for space, q, base in spaces:
        if q is None:
            continue
        hit, null, nearest = nearest_is_train(q, base, is_train, own=own, device=device)
        dh, dn = (
            distinct_reading(nearest, is_train) if len(hit) and not math.isnan(null) else (0.0, 0)
        )
        out.append(Membership(space, float(hit.sum()), len(hit), null, dh, dn))
    return out


#: Fewer fresh held-out images than this (each set) and the validation slice is used instead.
MIN_FRESH = 200


def pool_of(x: UnitInputs) -> Pool:
    """Training split (what the model trained on, then under data.train_subset the rest of
    the split), validation slice, whole held-out split: every real image."""
    b = x.bundle
    named = [("train", b.train.images, b.train.source_index)]
    unseen = getattr(b, "unseen", None)
    if unseen is not None and len(unseen):
        named.append(("unseen", unseen.images, unseen.source_index))
    if b.validation is not None and len(b.validation):
        named.append(("validation", b.validation.images, b.validation.source_index))
    named.append(("heldout", b.holdout.images, b.holdout.source_index))
    return make_pool(named)


def fresh_sets(x: UnitInputs, pool: Pool, *, want: int) -> FreshSets | str:
    """Calibration and check images: held-out images after the reference and the real-data
    row, else (too few) the validation slice's last images, which evaluate() does not see
    while the slice holds more than evaluate() takes. A string says why there are none."""
    parts = x.parts
    pos = parts.positions
    n_held = min(len(parts.calibration), len(parts.check), want)
    v = x.bundle.validation
    n_val = min(want, len(v) // 2) if v is not None else 0
    if n_held >= min(want, MIN_FRESH) or (n_held >= 2 and n_held >= n_val):
        off = pool.offset("heldout")
        return FreshSets(
            parts.calibration.images[:n_held],
            pos["calibration"][:n_held] + off,
            parts.check.images[:n_held],
            pos["check"][:n_held] + off,
            f"held-out split ({n_held} + {n_held} images after the reference and the real-data row)",
        )
    if n_val >= 2 and v is not None:
        off = pool.offset("validation")
        last = torch.arange(len(v) - 2 * n_val, len(v))
        cal, chk = last[:n_val], last[n_val:]
        return FreshSets(
            v.images[cal],
            cal + off,
            v.images[chk],
            chk + off,
            f"validation slice ({n_val} + {n_val} of its last images; the held-out split "
            f"is used up by the reference and the real-data row)",
        )
    return "too few held-out or validation images left to calibrate the audit"


def settings_of(x: UnitInputs) -> CopySettings:
    cfg = x.metrics_cfg
    seed = cfg.copy_descriptor_seed
    return CopySettings(
        max_shift=cfg.copy_max_shift,
        alpha=cfg.copy_alpha,
        flag_p=cfg.copy_flag_p,
        tolerance=cfg.copy_tolerance,
        calibration=cfg.copy_fresh,
        descriptor=DescriptorSettings(
            steps=cfg.copy_descriptor_steps, seed=drawn_seed() if seed is None else seed
        ),
    )


def copies_unit(x: UnitInputs) -> UnitResult:
    """Every sample against every real image, calibrated on fresh images, plus C_T."""
    settings = settings_of(x)
    pool = pool_of(x)
    fresh = fresh_sets(x, pool, want=settings.calibration)
    if isinstance(fresh, str):
        blocks: dict[str, Any] = {"rate": None, "flagged": False, "unavailable": fresh}
        return UnitResult(
            unavailable={"copy_rate": fresh}, scores={"copy_rate": None}, blocks={"copies": blocks}
        )
    exclude = None
    if x.heldout_positions is not None:
        exclude = x.heldout_positions + pool.offset("heldout")
    files: dict[str, Any] | None = {} if x.keep_files else None
    audit = copy_audit(
        x.images,
        pool=pool,
        fresh=fresh,
        settings=settings,
        device=x.device,
        describe=split_description(x.data_cfg, x.bundle, "train"),
        exclude=exclude,
        files=files,
    )
    return UnitResult(
        scores={"copy_rate": audit["rate"]}, blocks={"copies": audit}, files=files or {}
    )


def plan_text(cfg: Any) -> str:
    """What the copy audit of a run will search and calibrate on, from its config alone
    (``genbench run --dry-run``): the data's sizes are known only once it is loaded."""
    m, d = cfg.metrics, cfg.data
    if not m.enabled or not m.memorization:
        return "copy audit: off (metrics.enabled / metrics.memorization)"
    n = cfg.sample.n
    n_ref = m.n_ref or n
    want = m.copy_fresh  # each, where the split holds them (never fewer than N)
    spare = d.validation_size - cfg.train.eval_images
    fallback = (
        f"else the validation slice's last 2 x {want} images (never trained on, not seen by evaluate())"
        if spare >= 2 * want
        else f"else the validation slice's last images (data.validation_size = "
        f"{d.validation_size} leaves {max(spare, 0)} beside evaluate()'s {cfg.train.eval_images}:"
        f" fewer than 2 x {want}, so some overlap them)"
    )
    # A training-split reference (metrics.reference = "train") takes no held-out images.
    before = "" if m.reference == "train" else f"the {n_ref}-image reference and "
    return (
        f"copy audit: on; {n} samples against the training split, the validation slice "
        f"(<= {d.validation_size} images) and the whole held-out split; fresh images for "
        f"calibration and check: 2 x {want} held-out images after {before}"
        f"the {n}-image real-data row where the split holds them, {fallback}"
    )
