"""DCGAN with the 4-2-1 generator and discriminator of the DCGAN seed report (004).

At 64x64 RGB this is exactly the seed's GeneratorDG1 / DiscriminatorDG1:
G 100 -> 512 (4x4) -> 256 -> 128 -> 64 -> 3 (64x64), 3,576,704 parameters;
D 3 -> 64 -> 128 -> 256 -> 512 -> 1, 2,766,529 parameters.

Other resolutions keep the pattern: the stack has one stride-2 stage per
halving from the resolution down to 4x4, so 32x32 is one block shorter
(G 256 -> 128 -> 64 -> C). A stage whose larger side is odd (28 -> 14 -> 7 -> 4)
uses a 3x3 kernel instead of 4x4, which is what makes 28x28 (MNIST-size) work
with the same one-block-shorter stack. Supported sides: 4*2^k and 7*2^k, k >= 1.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from genbench.contract import DataSpec, Generator, GeneratorConfig


class DCGANConfig(GeneratorConfig):
    """The DCGAN paper's optimiser (Adam 2e-4, beta1 0.5) with the seed report's (004) 100-d
    latent. The seed's lr 1e-4 on batches of 32 is the `seeds` experiment's; at the quick
    default's budget 2e-4 learns garments 2.5x sooner (the README's tuning table)."""

    latent_dim: int = Field(100, ge=1, description="length of the generator's input noise vector")
    base_channels: int = Field(64, ge=1, description="width of D's first and G's last hidden layer")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of G and D (DCGAN's 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 of G and D")
    update_batch: int | None = Field(
        None,
        ge=1,
        description="images per G/D update: the loop's batch is split into chunks of this size, "
        "one update each (None: one update per batch); images seen stay the budget",
    )
    d_every: int = Field(
        1, ge=1, description="update D on every d_every-th update only (G on every one)"
    )


def stage_sizes(resolution: int) -> list[int]:
    """Feature-map sides from the image down to 4x4, halving (rounding up) each stage."""
    sizes = [resolution]
    while sizes[-1] > 4:
        sizes.append((sizes[-1] + 1) // 2)
    if sizes[-1] != 4 or len(sizes) < 2:
        raise ValueError(
            f"DCGAN supports sides 4*2^k or 7*2^k (k >= 1), e.g. 8, 16, 28, 32, 64; got {resolution}"
        )
    return sizes


def _kernel(larger_side: int) -> int:
    return 4 if larger_side % 2 == 0 else 3


class DCGANGenerator(nn.Module):
    def __init__(
        self, *, resolution: int, channels: int, latent_dim: int, base_channels: int
    ) -> None:
        super().__init__()
        sizes = stage_sizes(resolution)[::-1]  # 4, 8, ..., resolution
        k = len(sizes) - 1
        widths = [base_channels * 2 ** (k - 1 - i) for i in range(k)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for i in range(1, k):
            layers += [
                nn.ConvTranspose2d(widths[i - 1], widths[i], _kernel(sizes[i]), 2, 1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.ReLU(True),
            ]
        layers += [
            nn.ConvTranspose2d(widths[-1], channels, _kernel(sizes[-1]), 2, 1, bias=False),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, *, resolution: int, channels: int, base_channels: int) -> None:
        super().__init__()
        sizes = stage_sizes(resolution)
        k = len(sizes) - 1
        widths = [base_channels * 2**i for i in range(k)]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, widths[0], _kernel(sizes[0]), 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, k):
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], _kernel(sizes[i]), 2, 1),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def init_weights(m: nn.Module) -> None:
    # DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02).
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGAN(Generator):
    """4-2-1 DCGAN trained with binary cross-entropy (non-saturating G loss)."""

    Config = DCGANConfig
    conditional = False

    def __init__(
        self, *, spec: DataSpec, config: DCGANConfig, device: torch.device, train_data=None
    ) -> None:
        super().__init__(spec=spec, config=config, device=device, train_data=train_data)
        c = config
        self.G = DCGANGenerator(
            resolution=spec.resolution,
            channels=spec.channels,
            latent_dim=c.latent_dim,
            base_channels=c.base_channels,
        ).to(self.device)
        self.D = DCGANDiscriminator(
            resolution=spec.resolution, channels=spec.channels, base_channels=c.base_channels
        ).to(self.device)
        self.G.apply(init_weights)
        self.D.apply(init_weights)
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=c.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=c.lr, betas=betas)
        self._updates = 0  # counts G updates, for d_every

    @classmethod
    def check_spec(cls, spec: DataSpec, config: DCGANConfig) -> None:
        stage_sizes(spec.resolution)

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def extra_state(self) -> dict[str, Any]:
        return {"updates": self._updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._updates = int(state.get("updates", 0))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        size = self.config.update_batch or len(images)
        logs = [self._update(chunk) for chunk in images.split(size)]
        # The mean over this batch's updates: one log line per loop step, as for every model.
        return {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}

    def _update(self, images: torch.Tensor) -> dict[str, float]:
        b = len(images)
        z = torch.randn(b, self.config.latent_dim, device=self.device)
        ones = torch.ones(b, device=self.device)
        zeros = torch.zeros(b, device=self.device)
        fake = self.G(z)

        # BCE on logits equals BCE on the seed's sigmoid output, and is stable and autocast-safe.
        real_logits = self.D.logits(images)
        fake_logits = self.D.logits(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(
            real_logits, ones
        ) + F.binary_cross_entropy_with_logits(fake_logits, zeros)
        if self._updates % self.config.d_every == 0:
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        self._updates += 1

        loss_g = F.binary_cross_entropy_with_logits(self.D.logits(fake), ones)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item(),
        }

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)
        return (self.G(z).float() + 1) / 2
