"""The learned copy descriptor: an embedding in which an edited training image stays
next to its source.

The idea of SSCD (Pizzi et al. 2022), trained on the audit's own pool (every real image:
training, validation and held-out alike, so that it treats images a generator trained on
and images it never saw the same way): a small CNN learns, self-supervised (instance
discrimination, InfoNCE), to map each image and a random composition of edits of it
(:func:`edits.random_attack`: shifts, rotations, zooms, crops at any scale, smooth warps,
flips, erasing, blends of up to four images, mosaics of any layout, brightness, contrast,
gamma, blur, noise) to the same point and apart from every other image. It trains once
per dataset, resolution, split and seed (cached), in a bounded number of steps, and is
reused by every run that shares them. The seed is drawn once per results folder, so a
plugin handed the training images cannot rebuild the same network.

Inputs are the audit's canonical form (mean over channels in [0, 1]), standardized per
image (blind to affine intensity changes) and area-downsampled to at most 32 px.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genbench.metrics.audit.edits import mild, random_attack
from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.utils.device import autocast, cpu_has_native_bf16
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest as key_digest
from genbench.utils.progress import step_done

#: Bump when the network, its inputs or its training change: cached descriptors are keyed by it.
DESCRIPTOR_FORMAT = 2  # 2: trained on the whole pool, on edit families (k-blends, mosaics, warps)


@dataclass(frozen=True)
class DescriptorSettings:
    """Sized for the reference 2-core CPU: about two minutes for 60k 32x32 images (bf16)."""

    steps: int = 3000
    batch_size: int = 128  # anchors per step: 2 x 128 views, 254 negatives each
    lr: float = 2e-3
    width: int = 32
    dim: int = 128
    temperature: float = 0.07
    max_side: int = 32  # larger images are area-downsampled first
    seed: int = 0


def _block(cin: int, cout: int, *, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class CopyNet(nn.Module):
    """A 5x5 stride-2 stem, then three stages of two 3x3 convs (w, 2w, 4w channels; the
    second and third start with stride 2), global average and max pooling, a linear
    projection; outputs unit vectors. About 10M multiply-adds per 32x32 image, so it
    trains on a CPU in minutes."""

    def __init__(self, *, width: int = 32, dim: int = 128) -> None:
        super().__init__()
        w = width
        layers = [
            nn.Conv2d(1, w, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            *_block(w, w),
        ]
        for cin, cout in ((w, 2 * w), (2 * w, 4 * w)):
            layers += [*_block(cin, cout, stride=2), *_block(cout, cout)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        h = torch.cat([h.mean((-2, -1)), h.amax((-2, -1))], 1)
        return F.normalize(self.head(h).float(), dim=1)


def canonical01(images: torch.Tensor, device: torch.device, max_side: int) -> torch.Tensor:
    """uint8 N x C x H x W -> float N x 1 x S x S in [0, 1] (mean over channels, S <= max_side)."""
    x = images.to(device).float().mean(1, keepdim=True) / 255.0
    if x.shape[-1] > max_side:
        x = F.interpolate(x, size=(max_side, max_side), mode="area")
    return x


def _standardize(x: torch.Tensor) -> torch.Tensor:
    m = x.mean((-2, -1), keepdim=True)
    s = x.std((-2, -1), keepdim=True).clamp_min(0.02)
    return (x - m) / s


def _precision(device: torch.device) -> str:
    # bf16 where the hardware computes it natively (as training does); fp32 elsewhere.
    return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"


@torch.no_grad()
def embed(
    net: CopyNet,
    images: torch.Tensor,
    *,
    settings: DescriptorSettings,
    device: torch.device,
    batch: int = 1024,
) -> torch.Tensor:
    """Unit descriptors (N x dim, float32, on the CPU) of uint8 images."""
    net.eval()
    out = []
    for s in range(0, len(images), batch):
        x = _standardize(canonical01(images[s : s + batch], device, settings.max_side))
        with autocast(device, _precision(device)):
            out.append(net(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, settings.dim)


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first tenth of the steps, then a cosine decay to zero."""
    warm = max(1, steps // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return factor


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over 2B views: each view's positive is its pair, the rest negatives."""
    z = torch.cat([a, b])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(-torch.inf)
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def train_descriptor(
    train_images: torch.Tensor, *, settings: DescriptorSettings, device: torch.device
) -> tuple[CopyNet, dict[str, Any]]:
    """Train on uint8 images (the audit's pool); returns (network, info)."""
    t0 = time.perf_counter()
    side = min(train_images.shape[-1], settings.max_side)
    max_shift = max(2.0, side / 4)  # the attack ladder goes to 8 px at 32 px
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(settings.seed)
        net = CopyNet(width=settings.width, dim=settings.dim).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(settings.steps))
        g = torch.Generator().manual_seed(settings.seed)
        net.train()
        losses = []
        bs = min(settings.batch_size, len(train_images))
        for step in range(settings.steps):
            idx = torch.randint(len(train_images), (bs,), generator=g)
            x = canonical01(train_images[idx], device, settings.max_side)
            view = random_attack(x, gen=g, max_shift=max_shift)
            # The anchor view gets mild photometric noise, so neither side is always pristine.
            anchor = mild(x, gen=g)
            with autocast(device, _precision(device)):
                za, zb = net(_standardize(anchor)), net(_standardize(view))
            loss = info_nce(za.float(), zb.float(), settings.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step_done(step + 1, settings.steps)
    tail = losses[-max(1, len(losses) // 10) :]
    info = {
        "steps": settings.steps,
        "seed": settings.seed,
        "train_n": len(train_images),
        "final_loss": round(sum(tail) / len(tail), 4),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "precision": _precision(device),
    }
    return net.eval(), info


def drawn_seed() -> int:
    """The descriptor's seed where none is given: drawn once and kept in the cache
    (``$GENBENCH_CACHE/copies/descriptor-seed.json``), so it is not a constant a plugin
    can reproduce. A run's seed is its results folder's (see genbench/storage/folder.py)."""
    path = cache_root() / "copies" / "descriptor-seed.json"
    try:
        return int(json.loads(path.read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        seed = secrets.randbelow(2**31)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seed": seed}))
        return seed


def get_descriptor(
    train_images: torch.Tensor,
    *,
    describe: dict[str, Any],
    device: torch.device,
    settings: DescriptorSettings | None = None,
) -> tuple[CopyNet, dict[str, Any]]:
    """The dataset's copy descriptor, trained on first use and cached; returns (net, info)."""
    settings = settings or DescriptorSettings()
    key = {
        "format": DESCRIPTOR_FORMAT,
        **describe,
        "shape": list(train_images.shape[1:]),
        "train_sha256": sha256_tensor(train_images),
        "settings": asdict(settings),
    }
    path = cache_root() / "copies" / f"descriptor-{key_digest(key)}.pt"
    net = CopyNet(width=settings.width, dim=settings.dim)
    if path.is_file():
        try:
            blob = load_torch(path)
            if json.loads(blob["key"]) == json.loads(json.dumps(key)):
                net.load_state_dict(blob["state_dict"])
                return net.to(device).eval(), {**blob["info"], "cached": True}
        except (RuntimeError, OSError, KeyError, ValueError, TypeError):
            pass  # retrain below
    net, info = train_descriptor(train_images, settings=settings, device=device)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    save_torch(path, {"key": json.dumps(key, sort_keys=True), "state_dict": state, "info": info})
    return net, {**info, "cached": False}
