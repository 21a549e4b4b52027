"""The one transform pipeline every model sees: resize the shorter side,
center-crop to a square, keep uint8 until the batch is formed, then map to [-1, 1]."""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF


def prepare(
    images: torch.Tensor | list[torch.Tensor], *, resolution: int, channels: int
) -> torch.Tensor:
    """uint8 CxHxW images (a batch tensor or a list of any sizes) -> uint8 N x channels x R x R."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected N x C x H x W images, got shape {tuple(images.shape)}")
        chunks = [
            _prepare_batch(images[i : i + 4096], resolution) for i in range(0, len(images), 4096)
        ]
        out = (
            torch.cat(chunks)
            if chunks
            else images.new_zeros((0, images.shape[1], resolution, resolution))
        )
    else:
        out = (
            torch.stack([_prepare_batch(img[None], resolution)[0] for img in images])
            if images
            else None
        )
        if out is None:
            return torch.zeros((0, channels, resolution, resolution), dtype=torch.uint8)
    return set_channels(out, channels)


def _prepare_batch(batch: torch.Tensor, resolution: int) -> torch.Tensor:
    h, w = batch.shape[-2:]
    if (h, w) != (resolution, resolution):
        if min(h, w) != resolution:
            batch = TF.resize(batch, [resolution], antialias=True)
        batch = TF.center_crop(batch, [resolution, resolution])
    return batch.contiguous()


def set_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 1 and c == 3:
        # ITU-R 601 luma, the same weights PIL uses for "L".
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if channels == 3 and c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8, rounding to nearest (not truncating, which biases dark)."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
