"""The two-model check (Kadkhodaie et al., ICLR 2024): two runs of one model, trained on
disjoint training subsets of the same size (``data.train_subset_part`` 0 and 1) and sampled
from the same noise. A model that generalizes draws nearly the same image from the same noise
whichever half it saw; a model that memorizes draws its own training images, so its samples
lie closer to its own training set than to its twin's samples. The check reads only the
saved samples and the training images, so no copier can pass it by editing its copies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from genbench.report.collect import RunRecord
from genbench.storage.folder import read_sample_set
from genbench.storage.images import read_images


def _key(rec: RunRecord) -> tuple[Any, ...] | None:
    data = rec.metrics.get("data") or {}
    manifest = read_sample_set(rec.path / "samples")[1] if (rec.path / "samples").is_dir() else {}
    if not rec.done or rec.is_real or not data.get("train_subset") or not manifest:
        return None
    train = rec.config.get("train") or {}
    return (
        rec.experiment,
        rec.model,
        rec.seed,
        data["train_subset"],
        manifest.get("seed"),
        repr(manifest.get("sampler")),
        repr(train),
        repr(rec.config.get("generator")),
    )


def twin_pairs(records: Sequence[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """Runs that differ only in which block of the permutation they trained on (0 and 1),
    with the same sample seed and sampler: same noise, disjoint training images."""
    by_key: dict[tuple[Any, ...], dict[int, RunRecord]] = {}
    for rec in records:
        if (key := _key(rec)) is not None:
            part = int((rec.metrics.get("data") or {}).get("train_subset_part", 0))
            by_key.setdefault(key, {})[part] = rec
    return [(parts[0], parts[1]) for parts in by_key.values() if 0 in parts and 1 in parts]


def _flat(images: torch.Tensor) -> torch.Tensor:
    return images.reshape(len(images), -1).double() / 255.0


def _nearest(x: torch.Tensor, pool: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """RMS pixel distance of each row of x to its nearest row of pool."""
    best = torch.full((len(x),), float("inf"), dtype=torch.float64)
    for i in range(0, len(pool), chunk):
        best = torch.minimum(best, torch.cdist(x, pool[i : i + chunk]).min(dim=1).values)
    return best / x.shape[1] ** 0.5


def two_model_check(
    samples_a: torch.Tensor,
    samples_b: torch.Tensor,
    train_a: torch.Tensor,
    train_b: torch.Tensor,
) -> dict[str, Any]:
    """uint8 samples of two models from the same noise (row i of each from noise i) and each
    model's uint8 training images -> RMS pixel distances (0 to 1) and how often a pair is
    closer to each other than either sample is to its own nearest training image."""
    if samples_a.shape != samples_b.shape:
        raise ValueError(
            f"sample sets differ: {tuple(samples_a.shape)} vs {tuple(samples_b.shape)}"
        )
    a, b = _flat(samples_a), _flat(samples_b)
    between = (a - b).norm(dim=1) / a.shape[1] ** 0.5
    own_a, own_b = _nearest(a, _flat(train_a)), _nearest(b, _flat(train_b))
    closer = (between < torch.minimum(own_a, own_b)).double()
    return {
        "n": len(a),
        "between_median": _median(between),
        "own_train_median": {"a": _median(own_a), "b": _median(own_b)},
        "closer_to_twin": float(closer.mean()),
    }


def _median(t: torch.Tensor) -> float:
    return float(np.median(t.numpy()))


def twin_rows(
    records: Sequence[RunRecord], *, train_images: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per twin pair; ``train_images(rec)`` gives a run's uint8 training images (the
    report loads its data set). Returns the rows and notes on pairs that could not be read."""
    rows, notes = [], []
    for a, b in twin_pairs(records):
        try:
            sa = read_images(read_sample_set(a.path / "samples")[0])
            sb = read_images(read_sample_set(b.path / "samples")[0])
            check = two_model_check(sa, sb, train_images(a), train_images(b))
        except Exception as exc:  # the data may not be on this machine: a note, not a failure
            notes.append(f"two-model check {a.run_id} / {b.run_id}: skipped ({exc})")
            continue
        rows.append(
            {
                "experiment": a.experiment,
                "model": a.model,
                "seed": a.seed,
                "n_train": (a.metrics.get("data") or {}).get("train_subset"),
                "runs": [a.run_id, b.run_id],
                **check,
            }
        )
    return rows, notes
