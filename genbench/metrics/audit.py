"""The copy audit as a metric unit: the pool and the fresh images from a scoring call's data."""

from __future__ import annotations

from typing import Any

import torch

from genbench.metrics.copies import CopySettings, FreshSets, Pool, copy_audit, make_pool
from genbench.metrics.descriptor import DescriptorSettings
from genbench.metrics.protocol import split_description
from genbench.metrics.units import UnitInputs, UnitResult

#: Fewer fresh held-out images than this (each set) and the validation slice is used instead.
MIN_FRESH = 200


def pool_of(x: UnitInputs) -> Pool:
    """Training split, validation slice, whole held-out split: every real image."""
    b = x.bundle
    named = [("train", b.train.images, b.train.source_index)]
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
    return CopySettings(
        max_shift=cfg.copy_max_shift,
        alpha=cfg.copy_alpha,
        flag_p=cfg.copy_flag_p,
        calibration=cfg.copy_fresh,
        descriptor=DescriptorSettings(steps=cfg.copy_descriptor_steps),
    )


def copies_unit(x: UnitInputs) -> UnitResult:
    """Every sample against every real image, calibrated on fresh images, plus C_T."""
    settings = settings_of(x)
    pool = pool_of(x)
    fresh = fresh_sets(x, pool, want=min(settings.calibration, max(len(x.images), 2)))
    if isinstance(fresh, str):
        blocks: dict[str, Any] = {"rate": None, "flagged": False, "unavailable": fresh}
        return UnitResult(
            unavailable={"copy_rate": fresh}, scores={"copy_rate": None}, blocks={"copies": blocks}
        )
    exclude = None
    if x.heldout_positions is not None:
        exclude = x.heldout_positions + pool.offset("heldout")
    audit = copy_audit(
        x.images,
        pool=pool,
        fresh=fresh,
        settings=settings,
        device=x.device,
        describe=split_description(x.data_cfg, x.bundle, "train"),
        exclude=exclude,
        out_dir=x.out_dir,
    )
    return UnitResult(scores={"copy_rate": audit["rate"]}, blocks={"copies": audit})


def plan_text(cfg: Any) -> str:
    """What the copy audit of a run will search and calibrate on, from its config alone
    (``genbench run --dry-run``): the data's sizes are known only once it is loaded."""
    m, d = cfg.metrics, cfg.data
    if not m.enabled or not m.memorization:
        return "copy audit: off (metrics.enabled / metrics.memorization)"
    n = cfg.sample.n
    n_ref = m.n_ref or n
    want = min(m.copy_fresh, n)
    spare = d.validation_size - cfg.train.eval_images
    fallback = (
        f"else the validation slice's last 2 x {want} images (never trained on, not seen by evaluate())"
        if spare >= 2 * want
        else f"else the validation slice's last images (data.validation_size = "
        f"{d.validation_size} leaves {max(spare, 0)} beside evaluate()'s {cfg.train.eval_images}:"
        f" fewer than 2 x {want}, so some overlap them)"
    )
    return (
        f"copy audit: on; {n} samples against the training split, the validation slice "
        f"(<= {d.validation_size} images) and the whole held-out split; fresh images for "
        f"calibration and check: 2 x {want} held-out images after the {n_ref}-image reference "
        f"and the {n}-image real-data row where the split holds them, {fallback}"
    )
