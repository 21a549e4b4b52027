"""The fixed sample set: N images per run, reproducible from the seed (the run folder
saves it: :func:`genbench.storage.folder.write_sample_set`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from genbench.contract import Generator
from genbench.data import ImageSet, to_uint8


def plan_labels(model: Generator, train: ImageSet, n: int, *, seed: int) -> torch.Tensor | None:
    """Labels for a conditional model's sample set, drawn like the training set's, seeded."""
    spec = model.spec
    if not model.conditional or spec.condition == "none" or train.labels is None:
        return None
    g = torch.Generator().manual_seed(seed)
    if spec.condition == "classes":
        return torch.multinomial(
            train.class_frequencies().float(), n, replacement=True, generator=g
        )
    # Attributes: whole rows of real training vectors keep their joint statistics.
    rows = torch.randint(len(train), (n,), generator=g)
    return train.labels[rows].float()


def batch_generator(seed: int, batch: int) -> torch.Generator:
    """Each batch has its own noise stream, so a sample set does not depend on how
    batches are split across processes."""
    return torch.Generator().manual_seed(seed * 1_000_003 + batch)


def generate(
    model: Generator,
    n: int,
    *,
    labels: torch.Tensor | None,
    seed: int,
    batch_size: int,
    batches: Iterable[int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, dict[str, list[Any]]], float]:
    """Generate the given batches (default: all) of an n-image sample set.

    Returns uint8 images and per-image info by batch number, and the seconds it took.
    """
    model.eval()
    out: dict[int, torch.Tensor] = {}
    info: dict[int, dict[str, list[Any]]] = {}
    todo = range(math.ceil(n / batch_size)) if batches is None else batches
    t0 = time.perf_counter()
    with torch.no_grad():
        for b in todo:
            start = b * batch_size
            m = min(batch_size, n - start)
            lab = labels[start : start + m].to(model.device) if labels is not None else None
            batch = model.sample_with_info(m, labels=lab, generator=batch_generator(seed, b))
            imgs = batch.images
            if imgs.shape[0] != m or imgs.ndim != 4:
                raise RuntimeError(
                    f"sample({m}) returned shape {tuple(imgs.shape)}; expected ({m}, C, H, W)"
                )
            if not torch.isfinite(imgs).all():
                raise RuntimeError("sample() returned NaN or infinite values")
            out[b] = to_uint8(imgs)
            info[b] = batch.info
            if on_batch is not None:
                on_batch(m)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return out, info, time.perf_counter() - t0


def assemble(
    images: dict[int, torch.Tensor], info: dict[int, dict[str, list[Any]]]
) -> tuple[torch.Tensor, dict[str, list[Any]]]:
    """Batches (possibly gathered from several processes) -> one ordered sample set."""
    order = sorted(images)
    merged: dict[str, list[Any]] = {}
    for b in order:
        for k, v in info.get(b, {}).items():
            merged.setdefault(k, []).extend(v)
    return torch.cat([images[b] for b in order]), merged
