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
from genbench.utils.device import inference_channels_last, precision_name
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest

FEATURES_FORMAT = 2  # 2: batch norms folded into the convolutions
_LIVE: dict[tuple[Any, ...], torch.nn.Module] = {}
#: The features' dtype by what Inception computes in (the protocol's and the cache's ``dtype``).
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def feature_precision(device: torch.device, precision: str) -> str:
    """What Inception computes in for ``metrics.precision`` on ``device``: "fp32" or "bf16"
    ("auto" is bf16 where the hardware computes it natively, the rule training uses)."""
    return precision_name(device, precision)


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


class Fp32Block(torch.nn.Module):
    """A block that runs in fp32 inside bf16 autocast."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.block(x.float())


def to_bf16(module: torch.nn.Module) -> torch.nn.Module:
    """An extractor for bf16 autocast, in place: its convolutions' weights in bf16 (no cast
    per batch), except the first block's. That block sees the image itself, which bf16's
    8-bit mantissa would round; kept fp32 (under 1% of Inception's FLOPs) it halves bf16's
    deviation from fp32 (measured on digits: features 2.7% apart on average, not 5.7%)."""
    first = next(
        name
        for name, child in module.named_children()
        if any(isinstance(m, torch.nn.Conv2d) for m in child.modules())
    )
    setattr(module, first, Fp32Block(getattr(module, first)))
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Conv2d) and not name.startswith(f"{first}."):
            m.to(torch.bfloat16)
    return module


def get_extractor(
    choice: ExtractorChoice,
    device: torch.device,
    *,
    channels_last: bool | None = None,
    fold_bn: bool = True,
    bf16: bool = False,
) -> torch.nn.Module:
    """The torch-fidelity extractor for ``choice`` (one network per process, in each form
    asked for), eval mode,
    batch norms folded into the convolutions (``fold_bn``), in channels_last memory format where
    :func:`~genbench.utils.device.inference_channels_last` says so (or as ``channels_last`` asks).
    fp32, or with ``bf16`` prepared for bf16 autocast (:func:`to_bf16`)."""
    if channels_last is None:
        channels_last = inference_channels_last(device)
    base = (choice.name, choice.weights_path, choice.weights_sha256, choice.layers, str(device))
    key = (*base, channels_last, fold_bn, bf16)
    if key not in _LIVE:
        # One network in memory at a time, in as many forms as asked for (fp32 and bf16 alike).
        for old in [k for k in _LIVE if k[: len(base)] != base]:
            del _LIVE[old]
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
        if bf16:
            to_bf16(fe)
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
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """uint8 N x C x H x W -> {layer: float32 N x D} on CPU. In fp32 (any outer autocast is
    turned off), or in bf16 autocast where ``precision`` (``metrics.precision``) resolves to
    bf16 (:func:`feature_precision`); ``channels_last`` None = the device's default layout."""
    if channels_last is None:
        channels_last = inference_channels_last(device)
    bf16 = feature_precision(device, precision) == "bf16"
    fe = get_extractor(choice, device, channels_last=channels_last, bf16=bf16)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in choice.layers}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
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
    images: torch.Tensor,
    *,
    choice: ExtractorChoice,
    describe: dict[str, Any],
    dtype: str = "float32",
) -> dict[str, Any]:
    """What real-image features depend on: the pixels, the extractor, its weights and the
    dtype it computes in (:data:`DTYPES`)."""
    return {
        "format": FEATURES_FORMAT,
        **describe,
        "n": len(images),
        "shape": list(images.shape[1:]),
        "images_sha256": sha256_tensor(images),
        "extractor": choice.name,
        "weights_sha256": choice.weights_sha256,
        "layers": list(choice.layers),
        "dtype": dtype,
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
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], bool]:
    """Features of a set of real images, cached on disk by dataset, split, resolution,
    N, extractor, weights sha256 and dtype (and the pixels themselves). Returns (features, hit)."""
    dtype = DTYPES[feature_precision(device, precision)]
    key = feature_cache_key(images, choice=choice, describe=describe, dtype=dtype)
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
        images,
        choice=choice,
        device=device,
        batch_size=batch_size,
        on_batch=on_batch,
        precision=precision,
    )
    save_torch(path, {"key": json.dumps(key, sort_keys=True), "features": feats})
    return feats, False
