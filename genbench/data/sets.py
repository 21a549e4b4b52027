"""Prepared images in memory: an image set (uint8 images, labels, source indices) and the
bundle of a run's splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from genbench.contract import DataSpec
from genbench.data.transforms import to_model_range


@dataclass
class ImageSet:
    """Prepared images in memory: uint8 N x C x R x R, with labels.

    ``source_index`` maps each image to its index in the source's split, so
    anything derived from an image (a blend, a nearest neighbour) can point at it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    source_index: torch.Tensor
    class_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def batch(
        self, idx: torch.Tensor, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Float images in [-1, 1] and labels for the given positions."""
        device = torch.device(device)
        u8 = self.images[idx]
        y = self.labels[idx] if self.labels is not None else None
        if device.type == "cuda":
            # uint8 crosses the bus (4x less than float) from pinned memory, asynchronously;
            # the data is already in memory, so no loader workers are needed.
            u8 = u8.pin_memory().to(device, non_blocking=True)
            y = y.pin_memory().to(device, non_blocking=True) if y is not None else None
        elif y is not None:
            y = y.to(device)
        return to_model_range(u8.to(device)), y

    def class_frequencies(self) -> torch.Tensor:
        if self.labels is None or self.labels.dtype != torch.int64:
            raise ValueError("class frequencies need class labels")
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).double()
        return counts / counts.sum()

    def subset(self, idx: torch.Tensor) -> ImageSet:
        return ImageSet(
            self.images[idx],
            self.labels[idx] if self.labels is not None else None,
            self.source_index[idx],
            self.class_names,
            self.attribute_names,
        )


@dataclass
class DataBundle:
    """The training split, the held-out split (FID reference, real-data row, copy-audit
    images) and the validation slice: training-pool images set aside and never trained
    on, which ``Generator.evaluate`` receives, so no model sees a held-out image."""

    train: ImageSet
    holdout: ImageSet
    spec: DataSpec
    split: dict[str, Any] = field(default_factory=dict)  # recorded in the run
    validation: ImageSet | None = None
    # data.train_subset: the rest of the training split, never trained on (the audit's
    # pool keeps it, so the pool is the same at every subset size)
    unseen: ImageSet | None = None

    def full_train(self) -> ImageSet:
        """The whole training split: under data.train_subset, the subset and then the rest
        (measuring instruments such as the class-consistency classifier train on this, so
        they are the same at every subset size)."""
        if self.unseen is None or not len(self.unseen):
            return self.train
        a, b = self.train, self.unseen
        labels = None if a.labels is None else torch.cat([a.labels, b.labels])
        return ImageSet(
            torch.cat([a.images, b.images]),
            labels,
            torch.cat([a.source_index, b.source_index]),
            a.class_names,
            a.attribute_names,
        )
