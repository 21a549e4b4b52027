"""The one-shot blended-input denoiser of seed report 000.

Network: a plain UNet (3x3 conv + ReLU pairs, 64-128-256 channels, two 2x2
max-pool levels, 2x2 transposed-conv upsampling, concatenated skips, 1x1 output
conv, no output activation), 1,862,979 parameters for RGB, exactly the seed's
``SimpleUNet``. ``widths`` generalises it: one pooling level per width after the
first.

Objective: remove Gaussian noise of strength sigma ~ U(sigma_min, sigma_max),
one sigma per batch as in the seed, with an MSE loss against the clean image
(Adam, lr 1e-4). The seed's batch size (16) is the experiment's
``train.batch_size``, not a model setting.

Sampler: average 1-3 randomly drawn *training* images and pass the blend once
through the network (no noise is added at sampling). For a class label, ``k``
images of that class; for a row of class-mixture weights, one image per class
with non-zero weight, weighted (the seed's two- and three-group mixes); with no
label, ``k`` images from the whole training split. Which training images went
into each sample is returned beside it (``blend_sources`` / ``blend_weights``),
because every output is a denoised average of real images: the memorization
audit needs to know which.

Value range: the seed's images were ``ToTensor()`` followed by
``Normalize(0.5, 0.5)``, i.e. in [-1, 1], and its sigma range applies to that
range. genbench feeds [-1, 1] too, so sigma is used unscaled: noise of 0.05-0.2
is 2.5-10% of the data range in both.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from genbench.contract import DataSpec, Generator, GeneratorConfig, SampleBatch
from genbench.data import ImageSet, to_model_range


class DenoiserConfig(GeneratorConfig):
    widths: list[int] = Field(
        default_factory=lambda: [64, 128, 256],
        min_length=2,
        description="UNet channels per level; len(widths) - 1 max-pool levels",
    )
    sigma_min: float = Field(
        0.05,
        ge=0,
        description="training noise std ~ U(sigma_min, sigma_max), once per batch; [-1, 1] units",
    )
    sigma_max: float = Field(0.2, ge=0, description="upper end of the training noise std")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (default betas)")
    k: int = Field(2, ge=1, description="images blended per sample (class label or no label)")
    eval_seed: int = Field(0, description="seed of the fixed noise draw behind test_loss")

    @model_validator(mode="after")
    def _check(self) -> DenoiserConfig:
        if self.sigma_max < self.sigma_min:
            raise ValueError(f"sigma_max {self.sigma_max} is below sigma_min {self.sigma_min}")
        if min(self.widths) < 1:
            raise ValueError(f"widths must be positive, got {self.widths}")
        return self


# -- network ----------------------------------------------------------------------
def conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """The seed's SimpleUNet for any number of levels; the last width is the bottleneck."""

    def __init__(self, *, channels: int, widths: list[int]) -> None:
        super().__init__()
        ins = [channels, *widths[:-1]]
        self.encoders = nn.ModuleList(conv_pair(i, o) for i, o in zip(ins, widths, strict=True))
        self.pool = nn.MaxPool2d(2, 2)
        deep_to_shallow = list(range(len(widths) - 2, -1, -1))
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in deep_to_shallow
        )
        self.decoders = nn.ModuleList(conv_pair(2 * widths[i], widths[i]) for i in deep_to_shallow)
        self.out = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = decoder(torch.cat((up(x), skips.pop()), dim=1))
        return self.out(x)


# -- objective ----------------------------------------------------------------------
def denoising_loss(
    net: nn.Module, clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float
) -> torch.Tensor:
    """MSE between the network's output for ``clean + sigma * noise`` and ``clean``."""
    return F.mse_loss(net(clean + sigma * noise).float(), clean.float())


# -- sampler --------------------------------------------------------------------------
def draw_distinct(pool: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k entries of ``pool`` drawn uniformly without repeats (with repeats only if len(pool) < k).

    A repeat would make part of the blend a plain copy of one image.
    """
    idx = torch.randint(len(pool), (k,), generator=generator)
    while len(pool) >= k and len(idx.unique()) < k:
        idx = torch.randint(len(pool), (k,), generator=generator)
    return pool[idx]


class Denoiser(Generator):
    """One-shot denoising UNet that generates by denoising blends of real training images.

    ``conditional`` is True at class level because class labels steer the
    sampler (which images are blended). Labels never reach the network, and only
    class labels can steer the blend, so an instance built on data without
    classes sets ``self.conditional = False``: the framework then plans no
    labels for it and records its samples as unconditional, which is what they
    are. Training ignores labels in every case.
    """

    Config = DenoiserConfig
    conditional = True
    sampling_keys = frozenset({"k"})  # images per blend: a sweep over it trains once
    # Each sample is a denoised blend of real training images: the copy audit's verdict is
    # reported as "derived from training images (by design)", ranked apart.
    derived_from_training = True

    def __init__(
        self,
        *,
        spec: DataSpec,
        config: DenoiserConfig,
        device: torch.device,
        train_data: ImageSet | None = None,
    ) -> None:
        super().__init__(spec=spec, config=config, device=device, train_data=train_data)
        self.check_spec(spec, config)
        self.conditional = spec.condition == "classes"
        self.net = UNet(channels=spec.channels, widths=list(config.widths)).to(self.device)
        if self.device.type in ("cuda", "cpu"):
            # Faster on both: on the CPU, with bf16 autocast, ~1.2x per training step.
            self.net = self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self._class_pos: list[torch.Tensor] = []
        if self.conditional and train_data is not None and train_data.labels is not None:
            labels = train_data.labels
            self._class_pos = [
                torch.nonzero(labels == c).flatten() for c in range(spec.num_classes)
            ]

    @classmethod
    def check_spec(cls, spec: DataSpec, config: DenoiserConfig) -> None:
        levels = len(config.widths) - 1
        if spec.resolution % 2**levels:
            raise ValueError(
                f"the denoiser's UNet pools {levels} times, so the image side must be a "
                f"multiple of {2**levels} (e.g. 8, 16, 28, 32, 64); got {spec.resolution}"
            )

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"unet": self.opt}

    def sampling_protocol(self) -> dict[str, Any]:
        return {"sampler": "blend-denoise", "nfe": 1, "k": self.config.k}

    # -- training ------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        c = self.config
        # One sigma per batch, as the seed draws it; the global RNG is the framework's.
        sigma = float(torch.empty(()).uniform_(c.sigma_min, c.sigma_max))
        loss = denoising_loss(self.net, images, torch.randn_like(images), sigma)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        # A private, freshly seeded generator: the same held-out batch gets the same noise at
        # every evaluation (so test_loss is comparable over training) and the global RNG, which
        # drives training noise, is not touched. Per-image sigma covers the range in each batch.
        c = self.config
        g = torch.Generator().manual_seed(c.eval_seed)
        n = len(images)
        sigma = torch.empty(n, 1, 1, 1).uniform_(c.sigma_min, c.sigma_max, generator=g)
        noise = torch.randn(images.shape, generator=g)
        loss = denoising_loss(self.net, images, noise.to(images.device), sigma.to(images.device))
        return {"test_loss": loss.item()}

    # -- sampling ------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.sample_with_info(n, labels=labels, generator=generator).images

    @torch.no_grad()
    def sample_with_info(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SampleBatch:
        """Blend training images per sample, denoise once; record what each blend is made of."""
        positions, weights = self.plan_blends(n, labels=labels, generator=generator)
        data = self._train_set()
        blends = []
        for pos, w in zip(positions, weights, strict=True):
            imgs = to_model_range(data.images[pos])  # blends are made in the seed's [-1, 1]
            blends.append(torch.einsum("k,kchw->chw", torch.tensor(w), imgs))
        x = torch.stack(blends).to(self.device)
        if self.device.type in ("cuda", "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)
        images = ((self.net(x).float() + 1) / 2).clamp(0, 1)
        return SampleBatch(
            images,
            info={
                "blend_sources": [data.source_index[pos].tolist() for pos in positions],
                "blend_weights": weights,
            },
        )

    def plan_blends(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[list[torch.Tensor], list[list[float]]]:
        """Per sample: positions in ``train_data`` and their blend weights (summing to 1).

        One recipe per row, drawn in row order, so a class label with ``k = 1``
        and the matching one-hot mixture draw the same image from the same seed.
        """
        data = self._train_set()
        if labels is not None and len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} samples")
        use_labels = labels is not None and self.conditional
        if labels is not None:
            labels = labels.cpu()  # one transfer, not one per row
        if use_labels and labels.is_floating_point():
            if labels.shape != (n, self.spec.num_classes) or (labels < 0).any():
                raise ValueError(
                    f"mixture weights must be non-negative, shape ({n}, {self.spec.num_classes}); "
                    f"got shape {tuple(labels.shape)}"
                )
            if (labels.sum(1) <= 0).any():
                raise ValueError("every row of mixture weights needs a positive weight")
        elif use_labels and ((labels < 0) | (labels >= self.spec.num_classes)).any():
            raise ValueError(f"class labels must lie in [0, {self.spec.num_classes})")

        everyone = torch.arange(len(data))
        positions, weights = [], []
        for i in range(n):
            if not use_labels:
                recipe = [(everyone, self.config.k, 1.0)]
            elif labels.is_floating_point():
                row = labels[i].double()
                row = row / row.sum()  # rows should already sum to 1; tolerate rounding
                recipe = [
                    (self._class_pool(int(c)), 1, float(row[c])) for c in row.nonzero().flatten()
                ]
            else:
                recipe = [(self._class_pool(int(labels[i])), self.config.k, 1.0)]
            pos, w = [], []
            for pool, count, weight in recipe:
                pos.append(draw_distinct(pool, count, generator))
                w += [weight / count] * count
            positions.append(torch.cat(pos))
            weights.append(w)
        return positions, weights

    def _train_set(self) -> ImageSet:
        if self.train_data is None or len(self.train_data) == 0:
            raise RuntimeError(
                "the denoiser samples by blending training images; build it with train_data"
            )
        return self.train_data

    def _class_pool(self, c: int) -> torch.Tensor:
        if not self._class_pos:
            raise RuntimeError("class-conditional blending needs train_data with class labels")
        pool = self._class_pos[c]
        if len(pool) == 0:
            name = self.spec.class_names[c]
            raise ValueError(f"class {c} ({name!r}) has no training images to blend")
        return pool
