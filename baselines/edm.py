"""EDM: diffusion in Karras et al.'s (2022) design space, on the shared UNet.

The denoiser wraps the UNet F in the paper's preconditioning (Table 1):
``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` with
``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
``c_in = 1 / sqrt(sigma^2 + sd^2)`` and ``c_noise = ln(sigma) / 4`` (sd = sigma_data =
0.5), so the network's input and target have unit variance at every noise level.
Training draws ``ln(sigma) ~ N(P_mean, P_std^2)`` (-1.2, 1.2) and minimises
``lambda(sigma) |D(y + n; sigma) - y|^2`` with ``lambda = (sigma^2 + sd^2) / (sigma sd)^2``
(which makes the effective weight on F's error 1). Sampling is the deterministic Heun
sampler (Algorithm 1) on ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) -
sigma_max^(1/rho)))^rho``, rho = 7, sigma in [0.002, 80], N = 18 steps, 35 evaluations,
via :mod:`genbench.diffusion.ode`.

Where it departs from the paper (each to stay comparable with ddpm at CPU budgets, see
docs/generators.md): ddpm's 1.1M-parameter UNet and optimiser (AdamW 1e-3, 20 warm-up
steps, gradient clipping at 1, EMA 0.995 from step 2000) instead of DDPM++ with Adam,
a 10 Mimg ramp-up and a 0.5 Mimg EMA half-life; no dropout and no augmentation; the
loss is a mean over pixels, not a sum (a constant factor). Conditioning is optional
(``conditional = true``), guided as cddpm is, on the denoiser's output.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from genbench.diffusion.model import (
    OptimConfig,
    OptionalGuidanceConfig,
    UNetConfig,
    UNetGenerator,
)
from genbench.diffusion.ode import OdeSolver, karras_sigmas, solve_ode, solver_nfe
from genbench.utils.device import precision_name


def preconditioning(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) at noise levels ``sigma`` (EDM, Table 1)."""
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / var.sqrt()
    c_in = 1 / var.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, i.e. 1 / c_out^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _per_image(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c.view(-1, *([1] * (x.dim() - 1)))


class EDMConfig(OptionalGuidanceConfig, UNetConfig, OptimConfig):
    """EDM: ddpm's UNet and optimisation, the paper's preconditioning, noise levels and sampler."""

    sigma_data: float = Field(0.5, gt=0, description="data standard deviation (EDM: 0.5)")
    p_mean: float = Field(-1.2, description="mean of ln(sigma) in training (EDM: -1.2)")
    p_std: float = Field(1.2, gt=0, description="standard deviation of ln(sigma) (EDM: 1.2)")
    sigma_min: float = Field(0.002, gt=0, description="lowest noise level of the sampler")
    sigma_max: float = Field(80.0, gt=0, description="highest noise level of the sampler")
    rho: float = Field(7.0, gt=0, description="step spacing: equal steps in sigma^(1/rho)")
    sampler: OdeSolver = Field("heun", description="ODE solver: heun (EDM's) or euler")
    sample_steps: int = Field(
        18, ge=1, description="noise levels N (heun: 2N - 1 evaluations; EDM's 18 = 35)"
    )

    @model_validator(mode="after")
    def _sigmas(self) -> EDMConfig:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min={self.sigma_min} must be below sigma_max={self.sigma_max}")
        return self


class EDM(UNetGenerator):
    """EDM-preconditioned denoiser sampled by the deterministic Heun sampler."""

    Config = EDMConfig
    config: EDMConfig
    sampling_keys = frozenset(
        {
            "sigma_min",
            "sigma_max",
            "rho",
            "sampler",
            "sample_steps",
            "use_ema",
            "sample_bf16",
            "guidance_scale",
        }
    )

    @classmethod
    def sampler_variants(cls, config: EDMConfig) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[override]
        n = config.sample_steps
        return [
            (f"heun ({n})", {"sampler": "heun"}),
            (f"euler ({n})", {"sampler": "euler"}),
        ]

    def call_network(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        """The denoised image D(x; sigma) at noise levels ``t`` = sigma (N,)."""
        sigma = t.float()
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.config.sigma_data)
        f = net(_per_image(c_in, x) * x, c_noise, labels, drop).float()
        return _per_image(c_skip, x) * x + _per_image(c_out, x) * f

    def _sigmas(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        c = self.config
        return (c.p_mean + c.p_std * torch.randn(n, generator=generator)).exp().to(self.device)

    def _loss(
        self,
        net: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        generator: torch.Generator | None,
        train: bool,
    ) -> torch.Tensor:
        """lambda(sigma)-weighted MSE of the denoiser at log-normal noise levels."""
        sigma = self._sigmas(len(images), generator)
        noisy = images + _per_image(sigma, images) * self._noise(images, generator)
        cond, drop = self._condition(labels, len(images), train=train)
        denoised = self.call_network(net, noisy, sigma, cond, drop)
        weight = _per_image(loss_weight(sigma, self.config.sigma_data), images)
        return (weight * (denoised - images.float()) ** 2).mean()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        c = self.config
        net, lab = self.sampling_net(), self._sample_labels(labels)
        sigmas = karras_sigmas(
            c.sample_steps, sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho
        )

        def dx_dsigma(x: torch.Tensor, sigma: float) -> torch.Tensor:
            return (x - self.predict(net, x, sigma, lab)) / sigma

        x = self._initial_noise(n, generator) * sigmas[0]
        x = solve_ode(dx_dsigma, x, sigmas, solver=c.sampler)
        return ((x.float().clamp(-1, 1) + 1) / 2).contiguous()

    def sampling_protocol(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "sampler": c.sampler,
            "nfe": solver_nfe(c.sampler, c.sample_steps) * self.passes_per_step(),
            "steps": c.sample_steps,
            "sigma_min": c.sigma_min,
            "sigma_max": c.sigma_max,
            "rho": c.rho,
            "ema": c.use_ema,
            "precision": precision_name(self.device, self._sample_precision()),
        }
        if self.conditional:
            out["guidance_scale"] = c.guidance_scale
        return out
