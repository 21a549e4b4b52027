"""Feature extraction through torch-fidelity's extractors, with a cache for
real-image features only (generated samples are always extracted afresh)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
import torch_fidelity
from torch.nn.utils.fusion import fuse_conv_bn_eval

from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.metrics.inception import ExtractorChoice
from genbench.utils.device import inference_channels_last
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest

FEATURES_FORMAT = 2  # 2: batch norms folded into the convolutions
_LIVE: dict[tuple[Any, ...], torch.nn.Module] = {}


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x {1,3} x H x W -> N x 3 x H x W; grayscale is replicated, as PIL's convert("RGB") does."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected uint8 N x C x H x W images, got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[1] == 3:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot score {images.shape[1]}-channel images")


def fold_batchnorm(module: torch.nn.Module) -> int:
    """Fold each eval-mode batch norm that follows a convolution (torch-fidelity's Inception
    blocks hold them as ``.conv`` and ``.bn``) into the convolution's weights and bias.
    The same function up to float rounding (features within ~2e-6 relative), one pass less
    per layer. Returns how many were folded."""
    n = 0
    for m in module.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(conv.eval(), bn.eval())
            m.bn = torch.nn.Identity()
            n += 1
    return n


def get_extractor(
    choice: ExtractorChoice,
    device: torch.device,
    *,
    channels_last: bool | None = None,
    fold_bn: bool = True,
) -> torch.nn.Module:
    """The torch-fidelity extractor for ``choice`` (one live instance per process), fp32, eval mode,
    batch norms folded into the convolutions (``fold_bn``), in channels_last memory format where
    :func:`~genbench.utils.device.inference_channels_last` says so (or as ``channels_last`` asks)."""
    if channels_last is None:
        channels_last = inference_channels_last(device)
    key = (choice.name, choice.weights_path, choice.weights_sha256, choice.layers, str(device))
    key += (channels_last, fold_bn)
    if key not in _LIVE:
        _LIVE.clear()  # one Inception in memory at a time
        kwargs: dict[str, Any] = {"verbose": False}
        if choice.weights_path is not None:
            kwargs["feature_extractor_weights_path"] = choice.weights_path
        fe = choice.extractor_cls(choice.name, list(choice.layers), **kwargs)
        fe = fe.eval().requires_grad_(False)
        if fold_bn:
            fold_batchnorm(fe)
        fe = fe.to(device)
        if channels_last:
            fe = fe.to(memory_format=torch.channels_last)  # same features, faster convs
        _LIVE[key] = fe
    return _LIVE[key]


@torch.no_grad()
def extract_features(
    images: torch.Tensor,
    *,
    choice: ExtractorChoice,
    device: torch.device,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
    channels_last: bool | None = None,
) -> dict[str, torch.Tensor]:
    """uint8 N x C x H x W -> {layer: float32 N x D} on CPU, always in fp32 (never autocast);
    ``channels_last`` None = the device's default layout for scoring."""
    if channels_last is None:
        channels_last = inference_channels_last(device)
    fe = get_extractor(choice, device, channels_last=channels_last)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in choice.layers}
    with torch.autocast(device.type, enabled=False):
        for start in range(0, len(images), batch_size):
            batch = to_rgb(images[start : start + batch_size]).to(device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            feats = fe.convert_features_tuple_to_dict(fe(batch))
            for k in choice.layers:
                out[k].append(feats[k].float().cpu())
            if on_batch is not None:
                on_batch(len(batch))
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in out.items()}


def feature_cache_key(
    images: torch.Tensor, *, choice: ExtractorChoice, describe: dict[str, Any]
) -> dict[str, Any]:
    """What real-image features depend on: the pixels, the extractor and its weights."""
    return {
        "format": FEATURES_FORMAT,
        **describe,
        "n": len(images),
        "shape": list(images.shape[1:]),
        "images_sha256": sha256_tensor(images),
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
        "layers": list(choice.layers),
        "dtype": "float32",
        "torch_fidelity": torch_fidelity.__version__,
    }


def cached_features(
    images: torch.Tensor,
    *,
    choice: ExtractorChoice,
    device: torch.device,
    describe: dict[str, Any],
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Features of a set of real images, cached on disk by dataset, split, resolution,
    N, extractor and weights sha256 (and the pixels themselves). Returns (features, hit)."""
    key = feature_cache_key(images, choice=choice, describe=describe)
    stem = (
        "-".join(str(describe.get(k, "x")) for k in ("dataset", "split"))
        + f"-r{images.shape[-1]}-c{images.shape[1]}-n{len(images)}-{choice.name}"
    )
    path = cache_root() / "features" / f"{stem}-{digest(key)}.pt"
    if path.is_file():
        try:
            blob = load_torch(path)
            feats = blob["features"]
            if json.loads(blob["key"]) == json.loads(json.dumps(key)) and all(
                k in feats and len(feats[k]) == len(images) for k in choice.layers
            ):
                return {k: feats[k] for k in choice.layers}, True
        except (RuntimeError, OSError, KeyError, ValueError, TypeError):
            pass  # unreadable or stale: recompute and overwrite
    feats = extract_features(
        images, choice=choice, device=device, batch_size=batch_size, on_batch=on_batch
    )
    save_torch(path, {"key": json.dumps(key, sort_keys=True), "features": feats})
    return feats, False
