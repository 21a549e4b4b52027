"""load_data: one pipeline and one recorded split (split.json) for every model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from genbench.config import DataConfig
from genbench.contract import DataSpec
from genbench.data.sets import DataBundle, ImageSet
from genbench.data.sources import SOURCES, RawData, RawSplit
from genbench.data.transforms import prepare
from genbench.utils.errors import DataError


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def load_data(cfg: DataConfig) -> DataBundle:
    """Read, split and prepare a data source; the split is recorded in ``bundle.split``."""
    raw = _read_source(cfg)
    channels = cfg.channels or _native_channels(raw.train)
    condition = _condition(cfg, raw)
    s = _split(cfg, raw)
    tr_idx, va_idx = _validation_slice(s.train_idx, cfg)
    split_idx = tr_idx  # the training split; data.train_subset trains on part of it
    tr_idx, un_idx = _train_subset(tr_idx, cfg)
    train = _make_set(s.train_raw, tr_idx, cfg, channels, raw)
    validation = _make_set(s.train_raw, va_idx, cfg, channels, raw)
    holdout = _make_set(s.hold_raw, s.hold_idx, cfg, channels, raw)
    unseen = _make_set(s.train_raw, un_idx, cfg, channels, raw) if un_idx is not None else None
    if condition == "none":
        train.labels = holdout.labels = validation.labels = None
        if unseen is not None:
            unseen.labels = None
    spec = DataSpec(
        resolution=cfg.resolution,
        channels=channels,
        condition=condition,
        class_names=raw.class_names if condition == "classes" else (),
        attribute_names=raw.attribute_names if condition == "attributes" else (),
        num_train=len(train),
    )
    split = {
        "method": s.method,
        "seed": cfg.split_seed,
        "holdout_fraction": cfg.holdout_fraction if s.method == "random" else None,
        "train_from": s.train_from,
        "holdout_from": s.holdout_from,
        "n_train": len(train),
        "n_holdout": len(holdout),
        "train_index_sha256": _digest(split_idx),
        "holdout_index_sha256": _digest(s.hold_idx),
        "validation_from": s.train_from,
        "n_validation": len(validation),
        "validation_index_sha256": _digest(va_idx),
        **_subset_record(cfg, tr_idx, un_idx),
        "skipped_files": raw.skipped,
        "skipped_examples": raw.skipped_examples,
        "origin": raw.origin,
        "notes": raw.notes,
    }
    return DataBundle(
        train=train,
        holdout=holdout,
        spec=spec,
        split=split,
        validation=validation,
        unseen=unseen,
    )


def _read_source(cfg: DataConfig) -> RawData:
    if cfg.source not in SOURCES:
        import difflib

        hint = difflib.get_close_matches(cfg.source, SOURCES, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        raise DataError(f"unknown data source {cfg.source!r}{did} (known: {', '.join(SOURCES)})")
    raw: RawData = SOURCES[cfg.source].loader(root=cfg.root, label=cfg.label)
    total = len(raw.train) + (len(raw.test) if raw.test is not None else 0) + raw.skipped
    if total == 0 or len(raw.train) == 0:
        raise DataError(f"data source {cfg.source!r} ({raw.origin}) holds no readable images")
    if raw.skipped and raw.skipped / total > cfg.max_bad_fraction:
        raise DataError(
            f"{raw.skipped} of {total} files in {raw.origin} could not be read (more than "
            f"data.max_bad_fraction={cfg.max_bad_fraction}); e.g. {', '.join(raw.skipped_examples[:3])}"
        )
    return raw


@dataclass
class _Split:
    """Training and held-out indices and where each is drawn from (before the validation
    slice and data.train_subset)."""

    train_raw: RawSplit
    hold_raw: RawSplit
    train_idx: torch.Tensor
    hold_idx: torch.Tensor
    method: str
    train_from: str
    holdout_from: str


def _split(cfg: DataConfig, raw: RawData) -> _Split:
    """The official test set as held-out split, else a seeded random holdout of the
    training pool; then data.max_train and data.max_holdout."""
    if cfg.split == "official" and raw.test is not None:
        s = _Split(
            raw.train,
            raw.test,
            torch.arange(len(raw.train)),
            torch.arange(len(raw.test)),
            "official",
            "train",
            "test",
        )
    else:
        n = len(raw.train)
        n_hold = max(1, round(n * cfg.holdout_fraction))
        if n - n_hold < 1:
            raise DataError(
                f"{n} image(s) are too few to hold out {cfg.holdout_fraction:.0%} and still train"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
        ho_idx, tr_idx = perm[:n_hold].sort().values, perm[n_hold:].sort().values
        s = _Split(raw.train, raw.train, tr_idx, ho_idx, "random", "train", "train")
    s.train_idx = _cap(s.train_idx, cfg.max_train, seed=cfg.split_seed + 1)
    s.hold_idx = _cap(s.hold_idx, cfg.max_holdout, seed=cfg.split_seed + 2)
    return s


def _cap(idx: torch.Tensor, most: int | None, *, seed: int) -> torch.Tensor:
    """A seeded random ``most`` of ``idx``, in index order (all of it when it fits)."""
    if most is None or most >= len(idx):
        return idx
    pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:most]
    return idx[pick].sort().values


#: Seed offset of data.train_subset's permutation (the split's seeds use +1 to +3).
_SUBSET_SEED = 4


def _train_subset(
    tr_idx: torch.Tensor, cfg: DataConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(trained on, the rest in permutation order) under data.train_subset, else (all, None).
    The trained images are block ``train_subset_part`` of N images of one permutation of the
    split: block 0, the first N, nests across sizes; block 1 is disjoint from it. They stay
    in that order (block 0's pool is then the same tensor at every size)."""
    n, part = cfg.train_subset, cfg.train_subset_part
    if n is None:
        if part:
            raise DataError("data.train_subset_part needs data.train_subset")
        return tr_idx, None
    if (part + 1) * n > len(tr_idx):
        raise DataError(
            f"data.train_subset = {n} (block {part}) needs {(part + 1) * n} images but the "
            f"training split holds {len(tr_idx)} (after the validation slice)"
        )
    g = torch.Generator().manual_seed(cfg.split_seed + _SUBSET_SEED)
    order = tr_idx[torch.randperm(len(tr_idx), generator=g)]
    lo, hi = part * n, (part + 1) * n
    return order[lo:hi], torch.cat([order[:lo], order[hi:]])


def _subset_record(
    cfg: DataConfig, tr_idx: torch.Tensor, un_idx: torch.Tensor | None
) -> dict[str, Any]:
    """split.json's data.train_subset entries ({} without a subset)."""
    if un_idx is None:
        return {}
    part = {"train_subset_part": cfg.train_subset_part} if cfg.train_subset_part else {}
    return {
        "train_subset": cfg.train_subset,
        **part,
        "n_unseen": len(un_idx),
        "train_subset_index_sha256": _digest(tr_idx),
    }


def _validation_slice(tr_idx: torch.Tensor, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded slice of the training pool, at most a tenth of it, set aside from training."""
    n = min(cfg.validation_size, len(tr_idx) // 10)
    if n <= 0:
        return tr_idx, tr_idx[:0]
    perm = torch.randperm(len(tr_idx), generator=torch.Generator().manual_seed(cfg.split_seed + 3))
    return tr_idx[perm[n:]].sort().values, tr_idx[perm[:n]].sort().values


def _native_channels(split: RawSplit) -> int:
    imgs = split.images
    if isinstance(imgs, torch.Tensor):
        return int(imgs.shape[1])
    return 3 if any(img.shape[0] == 3 for img in imgs) else 1


def _condition(cfg: DataConfig, raw: RawData) -> str:
    labels = raw.train.labels
    has_classes = labels is not None and labels.dtype == torch.int64 and len(raw.class_names) > 0
    has_attrs = labels is not None and labels.is_floating_point() and len(raw.attribute_names) > 0
    if cfg.condition == "auto":
        if has_classes and len(raw.class_names) > 1:
            return "classes"
        return "attributes" if has_attrs else "none"
    if cfg.condition == "classes" and not has_classes:
        raise DataError(
            f"data.condition = 'classes' but source {cfg.source!r} has no class labels here"
        )
    if cfg.condition == "attributes" and not has_attrs:
        raise DataError(
            f"data.condition = 'attributes' but source {cfg.source!r} has no attribute labels"
        )
    return cfg.condition


def _make_set(
    raw: RawSplit, idx: torch.Tensor, cfg: DataConfig, channels: int, meta: RawData
) -> ImageSet:
    if isinstance(raw.images, torch.Tensor):
        imgs = prepare(raw.images[idx], resolution=cfg.resolution, channels=channels)
    else:
        imgs = prepare(
            [raw.images[i] for i in idx.tolist()], resolution=cfg.resolution, channels=channels
        )
    labels = raw.labels[idx] if raw.labels is not None else None
    return ImageSet(imgs, labels, idx.clone(), meta.class_names, meta.attribute_names)
