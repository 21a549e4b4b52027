"""Class consistency: does a conditional sample show the class it was asked for?

A small CNN is trained once per dataset (training split, seeded, cached under
the genbench cache) and classifies each sample; the score is its accuracy
against the intended labels, beside the classifier's own held-out accuracy
(the ceiling a perfect generator could reach).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import ImageSet
from genbench.metrics.cache import cache_root, sha256_tensor
from genbench.metrics.protocol import split_description
from genbench.metrics.units import UnitInputs, UnitResult
from genbench.utils.device import inference_channels_last
from genbench.utils.files import load_torch, save_torch
from genbench.utils.naming import digest
from genbench.utils.progress import step_done

CLASSIFIER_FORMAT = 1


@dataclass(frozen=True)
class ClassifierSettings:
    """Cheap on a CPU: 1000 steps of 128 images at 16x16 take about 20 s on 2 cores
    (Fashion-MNIST: about 89% held-out accuracy)."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 32
    max_resolution: int = 16  # larger images are area-downsampled first
    max_heldout: int = 10_000
    seed: int = 0


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(in_channels, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _inputs(
    images: torch.Tensor, max_resolution: int, device: torch.device, *, channels_last: bool = False
) -> torch.Tensor:
    x = images.to(device).float().div_(127.5).sub_(1.0)
    if x.shape[-1] > max_resolution:
        x = F.interpolate(x, size=(max_resolution, max_resolution), mode="area")
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    settings: ClassifierSettings,
    device: torch.device,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Predicted class per uint8 image (``channels_last`` None = the device's scoring layout)."""
    if not len(images):
        return torch.zeros(0, dtype=torch.long)
    return predict_logits(
        model, images, settings=settings, device=device, channels_last=channels_last
    ).argmax(1)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    settings: ClassifierSettings,
    device: torch.device,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """fp32 class logits per uint8 image (at least one), on the CPU."""
    model.eval()
    # Inference only: training keeps the default layout, so the cached weights do not change.
    cl = inference_channels_last(device) if channels_last is None else channels_last
    model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    out = []
    with torch.autocast(device.type, enabled=False):
        for s in range(0, len(images), 512):
            x = _inputs(images[s : s + 512], settings.max_resolution, device, channels_last=cl)
            out.append(model(x).float().cpu())
    return torch.cat(out)


def _train(
    train: ImageSet, holdout: ImageSet, *, settings: ClassifierSettings, device: torch.device
) -> tuple[SmallCNN, dict[str, Any]]:
    num_classes = len(train.class_names)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(settings.seed)
        model = SmallCNN(
            in_channels=train.images.shape[1], num_classes=num_classes, width=settings.width
        ).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=settings.lr, total_steps=settings.steps
        )
        g = torch.Generator().manual_seed(settings.seed)
        model.train()
        for step in range(settings.steps):
            b = torch.randint(len(train), (settings.batch_size,), generator=g)
            x = _inputs(train.images[b], settings.max_resolution, device)
            loss = F.cross_entropy(model(x), train.labels[b].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_done(step + 1, settings.steps)
    h = holdout.images[: settings.max_heldout]
    hy = holdout.labels[: settings.max_heldout]
    pred = predict(model, h, settings=settings, device=device)
    info = {
        "heldout_accuracy": float((pred == hy).float().mean()) if len(hy) else None,
        "heldout_n": len(hy),
        "train_n": len(train),
        "steps": settings.steps,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    return model, info


def get_classifier(
    train: ImageSet,
    holdout: ImageSet,
    *,
    describe: dict[str, Any],
    device: torch.device,
    settings: ClassifierSettings | None = None,
) -> tuple[SmallCNN, dict[str, Any]]:
    """The dataset's classifier, trained on first use and cached; returns (model, info)."""
    settings = settings or ClassifierSettings()
    if train.labels is None or train.labels.dtype != torch.int64 or not train.class_names:
        raise ValueError("class consistency needs class labels")
    key = {
        "format": CLASSIFIER_FORMAT,
        **describe,
        "class_names": list(train.class_names),
        "shape": list(train.images.shape[1:]),
        "train_sha256": sha256_tensor(train.images),
        "train_labels_sha256": sha256_tensor(train.labels),
        "heldout_sha256": sha256_tensor(holdout.images[: settings.max_heldout]),
        "settings": asdict(settings),
    }
    path = cache_root() / "classifier" / f"{describe.get('dataset', 'data')}-{digest(key)}.pt"
    model = SmallCNN(
        in_channels=train.images.shape[1], num_classes=len(train.class_names), width=settings.width
    )
    if path.is_file():
        try:
            blob = load_torch(path)
            if json.loads(blob["key"]) == json.loads(json.dumps(key)):
                model.load_state_dict(blob["state_dict"])
                return model.to(device).eval(), {**blob["info"], "cached": True}
        except (RuntimeError, OSError, KeyError, ValueError, TypeError):
            pass  # retrain below
    model, info = _train(train, holdout, settings=settings, device=device)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"key": json.dumps(key, sort_keys=True), "state_dict": state, "info": info})
    return model.eval(), {**info, "cached": False}


def class_consistency(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    class_names: tuple[str, ...],
    settings: ClassifierSettings | None = None,
    device: torch.device,
) -> dict[str, Any]:
    """Accuracy of the classifier on samples against their intended labels, per class too,
    and the fraction of samples predicted as each class (also for unconditional samples)."""
    settings = settings or ClassifierSettings()
    pred = predict(model, images, settings=settings, device=device)
    k = len(class_names)
    frac = torch.bincount(pred, minlength=k).double() / max(len(pred), 1)
    out: dict[str, Any] = {
        "predicted_fraction": {
            c: round(float(f), 4) for c, f in zip(class_names, frac, strict=True)
        },
    }
    if labels is not None:
        hit = (pred == labels).float()
        out["accuracy"] = float(hit.mean()) if len(hit) else None
        out["per_class_accuracy"] = {
            c: (float(hit[labels == i].mean()) if bool((labels == i).any()) else None)
            for i, c in enumerate(class_names)
        }
    return out


def consistency_unit(x: UnitInputs) -> UnitResult:
    """For class data with training labels: the classifier's verdict on every sample
    (the score needs intended labels; without them the block still shows the predicted classes)."""
    bundle = x.bundle
    if bundle.spec.condition != "classes" or bundle.train.labels is None:
        return UnitResult()
    settings = ClassifierSettings(steps=x.metrics_cfg.classifier_steps)
    model, info = get_classifier(
        bundle.full_train(),  # the same instrument at every data.train_subset size
        bundle.holdout,
        describe=split_description(x.data_cfg, bundle, "train"),
        device=x.device,
        settings=settings,
    )
    cc = class_consistency(
        model,
        x.images,
        x.labels,
        class_names=bundle.spec.class_names,
        settings=settings,
        device=x.device,
    )
    r = UnitResult(blocks={"class_consistency": {**cc, "classifier": info}})
    if x.labels is not None:
        r.scores["class_consistency"] = cc["accuracy"]
    return r
