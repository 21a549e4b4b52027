"""Unconditional DDPM (Ho et al. 2020): eps-prediction UNet trained with MSE.

Network, objective and sampler are separate: the UNet, the schedule, the
sampler loop and what every UNet generator shares (optimiser, EMA, conditioning,
the train step: :class:`genbench.diffusion.model.UNetGenerator`) live in
:mod:`genbench.diffusion`; this module holds the objective (uniform t, MSE on the
noise) and the sampling protocol. :class:`genbench_baselines.cddpm.CDDPM` subclasses
it and turns conditioning on.

Defaults are sized for the 2-core CPU reference machine (Fashion-MNIST 32x32):
a 1.1M-parameter UNet, T = 1000 for training, and 25-step DDIM for sampling,
because sampling the fixed set with 1000 ancestral steps would take longer than
training. ``sampler = "ddpm"`` with ``sample_steps = 1000`` is the paper's sampler;
any diffusers scheduler (``"dpmpp"``, ``"unipc"``, ``"heun"``, ...; ``genbench[diffusers]``)
samples the same network on the same betas.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from genbench.contract import DataSpec
from genbench.diffusion import (
    DIFFUSERS_SAMPLERS,
    NoiseSchedule,
    SamplerName,
    diffusers_available,
    run_sampler,
    sampler_plan,
)
from genbench.diffusion.model import OptimConfig, UNetConfig, UNetGenerator
from genbench.utils.device import precision_name


class DiffusionConfig(OptimConfig):
    """What every eps-prediction diffusion model here shares: schedule and sampling, on top of
    the optimisation every UNet generator shares (:class:`~genbench.diffusion.model.OptimConfig`).

    ddpm adds the shared UNet's keys (:class:`DDPMConfig`); diffusers-unet adds a
    diffusers ``UNet2DModel``'s.
    """

    # noise schedule
    timesteps: int = Field(1000, ge=1, description="T, diffusion steps in training")
    schedule: Literal["linear", "cosine"] = Field(
        "linear", description="betas: DDPM's linear, or cosine (Nichol & Dhariwal, s = 0.008)"
    )
    beta_start: float = Field(1e-4, gt=0, lt=1, description="first beta of the linear schedule")
    beta_end: float = Field(0.02, gt=0, lt=1, description="last beta of the linear schedule")
    # sampling
    sampler: SamplerName = Field(
        "ddim",
        description="ddim, ddpm (the paper's ancestral sampler, 1000 steps: 40x the cost), "
        "or a diffusers scheduler: dpmpp, unipc, euler, heun, ... (genbench[diffusers])",
    )
    sample_steps: int | None = Field(25, ge=1, description="None = all T steps")
    eta: float = Field(0.0, ge=0, description="DDIM noise; 0 = deterministic")
    ancestral_variance: Literal["beta", "posterior"] = Field(
        "beta", description="ancestral step variance: beta_t (the paper's) or the posterior's"
    )
    clip_denoised: bool = Field(True, description="clip the predicted x0 to [-1, 1] each step")

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionConfig:
        if self.sample_steps is not None and self.sample_steps > self.timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} exceeds timesteps={self.timesteps}")
        if self.schedule == "linear" and self.beta_end < self.beta_start:
            raise ValueError("beta_end must not be below beta_start")
        if self.sampler in DIFFUSERS_SAMPLERS and not diffusers_available():
            raise ValueError(
                f"sampler {self.sampler!r} needs the diffusers package: pip install 'genbench[diffusers]'"
            )
        return self


class DDPMConfig(UNetConfig, DiffusionConfig):
    """Sized for the 2-core CPU reference machine at 32x32 (see the module docstring)."""


class DDPM(UNetGenerator):
    """Unconditional denoising diffusion model with DDPM or DDIM sampling."""

    Config = DDPMConfig
    conditional = False
    # Sweeping these re-samples one trained model instead of training again.
    sampling_keys = frozenset(
        {
            "sampler",
            "sample_steps",
            "eta",
            "ancestral_variance",
            "clip_denoised",
            "use_ema",
            "sample_bf16",
        }
    )

    def __init__(
        self,
        *,
        spec: DataSpec,
        config: DDPMConfig,
        device: torch.device,
        train_data: Any = None,
        network: nn.Module | None = None,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        """``network`` and ``schedule``, when given, replace the ones the config describes
        (a pretrained model's weights and betas)."""
        c = config
        self.schedule = schedule or NoiseSchedule(
            kind=c.schedule, timesteps=c.timesteps, beta_start=c.beta_start, beta_end=c.beta_end
        )
        super().__init__(
            spec=spec, config=config, device=device, train_data=train_data, network=network
        )

    @classmethod
    def sampler_variants(cls, config: DDPMConfig) -> list[tuple[str, dict[str, Any]]]:
        steps = config.sample_steps or 50
        return [
            ("ddpm (all T)", {"sampler": "ddpm", "sample_steps": None}),
            (f"ddim ({steps})", {"sampler": "ddim", "sample_steps": steps}),
        ]

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
        x = run_sampler(
            lambda xt, t: self.predict(net, xt, t, lab),
            self._initial_noise(n, generator),
            self.schedule,
            sampler=c.sampler,
            steps=c.sample_steps,
            eta=c.eta,
            variance=c.ancestral_variance,
            clip=1.0 if c.clip_denoised else None,
            generator=generator,
        )
        return ((x.float().clamp(-1, 1) + 1) / 2).contiguous()

    def sampling_protocol(self) -> dict[str, Any]:
        c = self.config
        plan = sampler_plan(self.schedule, sampler=c.sampler, steps=c.sample_steps)
        out: dict[str, Any] = {
            "sampler": c.sampler,
            "nfe": plan["nfe_per_pass"] * self.passes_per_step(),
            "steps": plan["steps"],
            "timesteps": self.schedule.timesteps,
            "schedule": self.schedule.kind,
        }
        if c.sampler in ("ddpm", "ddim", "diffusers-ddpm", "diffusers-ddim"):
            out["clip_denoised"] = c.clip_denoised  # the others never clip x_0
        out["ema"] = c.use_ema
        out["precision"] = precision_name(self.device, self._sample_precision())
        if c.sampler in ("ddim", "diffusers-ddim"):
            out["eta"] = c.eta
        elif c.sampler in ("ddpm", "diffusers-ddpm"):
            out["variance"] = c.ancestral_variance
        if c.sampler in DIFFUSERS_SAMPLERS:
            out.update(
                scheduler=f"diffusers.{plan['scheduler']}",
                timestep_spacing=plan["timestep_spacing"],
            )
        return out

    def _loss(
        self,
        net: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        generator: torch.Generator | None,
        train: bool,
    ) -> torch.Tensor:
        """Simple DDPM objective: MSE between the drawn and the predicted noise at uniform t."""
        n = len(images)
        if generator is None:
            t = torch.randint(0, self.schedule.timesteps, (n,), device=self.device)
        else:
            t = torch.randint(0, self.schedule.timesteps, (n,), generator=generator).to(self.device)
        noise = self._noise(images, generator)
        xt = self.schedule.add_noise(images, noise, t)
        cond, drop = self._condition(labels, n, train=train)
        eps = self.call_network(net, xt, t, cond, drop)
        return F.mse_loss(eps.float(), noise.float())
