"""The scoring part of ``genbench bench``: Inception's images/s in fp32 and bf16 side by
side (with the fraction of the fp32 matmul peak fp32 reaches), and genbench's scoring path
next to a direct ``torch_fidelity.calculate_metrics`` call on the same two folders.

Images are random: speed does not depend on content.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genbench.utils.device import (
    autocast_dtype,
    inference_channels_last,
    synchronize,
)

if TYPE_CHECKING:
    from genbench.metrics.inception import ExtractorChoice


def _random_images(n: int, channels: int, resolution: int, *, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, resolution, resolution), generator=g).to(torch.uint8)


def inception_gflop_per_image(choice: ExtractorChoice, device: torch.device) -> float:
    """Inception's FLOPs for one image (its convolutions and the rest at 299 x 299, as
    ``torch.utils.flop_counter`` counts them), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    from genbench.metrics.features import get_extractor, to_rgb

    fe = get_extractor(choice, device)
    image = to_rgb(_random_images(1, 1, 32, seed=0)).to(device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fe(image)
    return counter.get_total_flops() / 1e9


def bench_inception(
    *,
    n: int = 24,
    repeats: int = 2,
    resolution: int = 32,
    channels: int = 1,
    batch_size: int | None = None,
    device: torch.device,
    fp32_peak_gflops: float | None = None,
) -> dict[str, Any]:
    """Inception's images/s on ``n`` images in fp32 and, where the device runs bf16
    autocast, in bf16, as ``genbench run`` extracts them (``metrics.precision``), each
    precision's best of ``repeats`` with the two interleaved so a busy machine slows them
    alike. With ``fp32_peak_gflops`` (an fp32 matmul's GFLOP/s measured in the same run),
    the fraction of it fp32 reaches."""
    from genbench.config import MetricsConfig
    from genbench.metrics.features import extract_features
    from genbench.metrics.scoring import extractor_for

    cfg = MetricsConfig()
    choice = extractor_for(cfg)
    batch = batch_size or cfg.extractor_batch(device)
    images = _random_images(n, channels, resolution, seed=1)
    precs = ["fp32", "bf16"] if autocast_dtype(device, "bf16") is not None else ["fp32"]
    for p in precs:  # build each extractor and warm its kernels up (one batch)
        extract_features(images[:batch], choice=choice, device=device, precision=p)
    best = dict.fromkeys(precs, float("inf"))
    for r in range(repeats):
        for p in precs if r % 2 == 0 else precs[::-1]:
            synchronize(device)
            t0 = time.perf_counter()
            extract_features(images, choice=choice, device=device, batch_size=batch, precision=p)
            synchronize(device)
            best[p] = min(best[p], time.perf_counter() - t0)
    gflop = inception_gflop_per_image(choice, device)
    ips = {p: round(n / t, 2) for p, t in best.items()}
    fp32_gflops = ips["fp32"] * gflop
    return {
        "extractor": choice.name,
        "images": n,
        "batch_size": batch,
        "gflop_per_image": round(gflop, 3),
        "images_per_s": ips,
        "gflops_per_s": {p: round(v * gflop, 1) for p, v in ips.items()},
        "bf16_speedup": round(ips["bf16"] / ips["fp32"], 2) if "bf16" in ips else None,
        "fp32_peak_gflops": fp32_peak_gflops,
        "fp32_peak_fraction": round(fp32_gflops / fp32_peak_gflops, 3)
        if fp32_peak_gflops
        else None,
    }


def bench_scoring(
    *, n: int = 32, resolution: int = 32, channels: int = 1, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """Score two folders of ``n`` PNGs with genbench (NCHW and channels_last Inception) and
    with torch-fidelity directly.

    All compute FID, KID and precision/recall with the extractor genbench would
    use (the offline conversion when the official weights are absent). The two
    FIDs are reported as well: they must agree. ``layout`` is what scoring uses on ``device``;
    the ``genbench_*`` figures are for it.
    """
    from genbench.config import MetricsConfig
    from genbench.metrics.features import extract_features
    from genbench.metrics.fidelity import FidelitySettings, fidelity_from_features
    from genbench.metrics.scoring import extractor_for
    from genbench.storage.images import image_files, read_images
    from genbench.utils.files import save_png

    choice = extractor_for(MetricsConfig())
    with tempfile.TemporaryDirectory(prefix="genbench-bench-") as tmp:
        dirs = [Path(tmp) / "a", Path(tmp) / "b"]
        for i, d in enumerate(dirs):
            d.mkdir()
            for j, img in enumerate(_random_images(n, channels, resolution, seed=seed + i)):
                save_png(img, d / f"{j:06d}.png")
        # Every timing includes building the extractor, as one call would.
        ours: dict[str, Any] = {}
        for layout in ("nchw", "channels_last"):
            t0 = time.perf_counter()
            feats = [
                extract_features(
                    read_images(image_files(d)),
                    choice=choice,
                    device=device,
                    channels_last=layout == "channels_last",
                )
                for d in dirs
            ]
            res = fidelity_from_features(
                feats[0],
                feats[1],
                names=["fid", "kid", "prc"],
                feature_layer=choice.feature_layer,
                logits_layer=None,
                settings=FidelitySettings(kid_subset_size=n),
            )
            ours[layout] = (time.perf_counter() - t0, res.scores.get("fid"))
        t0 = time.perf_counter()
        direct = _torch_fidelity(dirs, choice, n=n, device=device)
        direct_s = time.perf_counter() - t0
    return _scoring_summary(choice.name, n, ours, direct, direct_s, device=device)


def _torch_fidelity(
    dirs: list[Path], choice: ExtractorChoice, *, n: int, device: torch.device
) -> dict[str, Any]:
    """FID, KID and precision/recall of two folders by torch-fidelity directly."""
    import torch_fidelity

    with warnings.catch_warnings():  # its loader's worker count is torch-fidelity's choice
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        return torch_fidelity.calculate_metrics(
            input1=str(dirs[0]),
            input2=str(dirs[1]),
            fid=True,
            kid=True,
            prc=True,
            kid_subset_size=n,
            cuda=device.type == "cuda",
            cache=False,
            verbose=False,
            batch_size=32,
            **choice.fidelity_kwargs(),
        )


def _scoring_summary(
    extractor: str,
    n: int,
    ours: dict[str, tuple[float, Any]],
    direct: dict[str, Any],
    direct_s: float,
    *,
    device: torch.device,
) -> dict[str, Any]:
    default = "channels_last" if inference_channels_last(device) else "nchw"
    ours_s = ours[default][0]
    return {
        "extractor": extractor,
        "images": 2 * n,
        "layout": default,
        "by_layout": {
            k: {"seconds": round(t, 3), "images_per_s": round(2 * n / t, 2), "fid": fid}
            for k, (t, fid) in ours.items()
        },
        "genbench_seconds": round(ours_s, 3),
        "genbench_images_per_s": round(2 * n / ours_s, 2),
        "torch_fidelity_seconds": round(direct_s, 3),
        "torch_fidelity_images_per_s": round(2 * n / direct_s, 2),
        "overhead_ratio": round(ours_s / direct_s, 3),
        "fid_genbench": ours[default][1],
        "fid_torch_fidelity": direct["frechet_inception_distance"],
    }
