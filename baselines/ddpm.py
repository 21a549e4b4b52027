"""Unconditional DDPM (Ho et al. 2020): eps-prediction UNet trained with MSE.

Network, objective and sampler are separate: the UNet, the schedule and the
sampler loop live in :mod:`genbench.diffusion`; this module holds the
objective (uniform t, MSE on the noise), the optimiser, EMA and the sampling
protocol. :class:`genbench_baselines.cddpm.CDDPM` subclasses it and overrides only the
conditioning hooks (``_train_condition``, ``predict_eps``, ``sampling_protocol``).

Defaults are sized for the 2-core CPU reference machine (Fashion-MNIST 32x32):
a 1.1M-parameter UNet, T = 1000 for training, and 25-step DDIM for sampling,
because sampling the fixed set with 1000 ancestral steps would take longer than
training. ``sampler = "ddpm"`` with ``sample_steps = 1000`` is the paper's sampler;
any diffusers scheduler (``"dpmpp"``, ``"unipc"``, ``"heun"``, ...; ``genbench[diffusers]``)
samples the same network on the same betas.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from genbench.contract import DataSpec, Generator, GeneratorConfig
from genbench.diffusion import (
    DIFFUSERS_SAMPLERS,
    EMA,
    NoiseSchedule,
    SamplerName,
    UNet,
    check_resolution,
    diffusers_available,
    lr_factor,
    run_sampler,
    sampler_plan,
)
from genbench.utils.device import autocast, precision_name


class DiffusionConfig(GeneratorConfig):
    """What every eps-prediction diffusion model here shares: schedule, optimisation, sampling.

    ddpm adds its UNet's keys (:class:`DDPMConfig`); diffusers-unet adds a
    diffusers ``UNet2DModel``'s.
    """

    # noise schedule
    timesteps: int = Field(1000, ge=1, description="T, diffusion steps in training")
    schedule: Literal["linear", "cosine"] = Field(
        "linear", description="betas: DDPM's linear, or cosine (Nichol & Dhariwal, s = 0.008)"
    )
    beta_start: float = Field(1e-4, gt=0, lt=1, description="first beta of the linear schedule")
    beta_end: float = Field(0.02, gt=0, lt=1, description="last beta of the linear schedule")
    # optimisation
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; None = off")
    lr_schedule: Literal["constant", "cosine", "onecycle"] = Field(
        "constant", description="after warm-up; cosine and onecycle need schedule_kimg"
    )
    schedule_kimg: float | None = Field(
        None, gt=0, description="kimg the cosine/one-cycle schedule spans; set it to train.kimg"
    )
    warmup_steps: int = Field(20, ge=0, description="linear learning-rate warm-up steps")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="decay of the EMA weights")
    ema_start: int = Field(
        2000,
        ge=0,
        description="steps before the EMA starts averaging (seed 001; shorter runs sample the weights)",
    )
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
    use_ema: bool = Field(True, description="sample from the EMA weights")
    sample_bf16: bool = Field(
        True,
        description="bf16 autocast of the network in sampling where the device computes bf16 "
        "natively (CUDA, CPUs with AVX512-BF16/AMX); fp32 elsewhere",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionConfig:
        if self.sample_steps is not None and self.sample_steps > self.timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} exceeds timesteps={self.timesteps}")
        if self.lr_schedule != "constant" and self.schedule_kimg is None:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} needs schedule_kimg (set it to train.kimg)"
            )
        if self.schedule == "linear" and self.beta_end < self.beta_start:
            raise ValueError("beta_end must not be below beta_start")
        if self.sampler in DIFFUSERS_SAMPLERS and not diffusers_available():
            raise ValueError(
                f"sampler {self.sampler!r} needs the diffusers package: pip install 'genbench[diffusers]'"
            )
        return self


class DDPMConfig(DiffusionConfig):
    """Sized for the 2-core CPU reference machine at 32x32 (see the module docstring)."""

    # network
    base_channels: int = Field(
        32, ge=1, description="UNet channels at full resolution (x channel_mults per level)"
    )
    channel_mults: list[int] = Field(
        default_factory=lambda: [1, 2, 2],
        min_length=1,
        description="channel multiplier per level (32-64-64 at 32/16/8 px: ~1.1M parameters)",
    )
    num_res_blocks: int = Field(1, ge=1, description="residual blocks per level")
    attn_resolutions: list[int] = Field(
        default_factory=lambda: [8], description="sides with self-attention (and the middle)"
    )
    num_heads: int = Field(4, ge=1, description="self-attention heads")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the residual blocks")
    activation: Literal["silu", "gelu"] = Field("silu", description="activation in the blocks")
    norm_groups: int = Field(8, ge=1, description="GroupNorm groups")
    grad_checkpoint: bool = Field(
        False, description="recompute block activations in backward (less memory, more time)"
    )


class DDPM(Generator):
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
        super().__init__(spec=spec, config=config, device=device, train_data=train_data)
        c = config
        self.schedule = schedule or NoiseSchedule(
            kind=c.schedule, timesteps=c.timesteps, beta_start=c.beta_start, beta_end=c.beta_end
        )
        self.net = (network if network is not None else self.build_network()).to(self.device)
        if self.device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.ema = EMA(self.net, decay=c.ema_decay, start_step=c.ema_start)
        self.step = 0

    # -- hooks the conditional subclass (and diffusers-unet) override ---------
    def build_network(self) -> nn.Module:
        """The noise-prediction network, called as ``call_network(net, x, t, labels, drop)``."""
        c = self.config
        return UNet(
            channels=self.spec.channels,
            resolution=self.spec.resolution,
            base_channels=c.base_channels,
            channel_mults=c.channel_mults,
            num_res_blocks=c.num_res_blocks,
            attn_resolutions=c.attn_resolutions,
            num_heads=c.num_heads,
            dropout=c.dropout,
            activation=c.activation,
            norm_groups=c.norm_groups,
            grad_checkpoint=c.grad_checkpoint,
            **self._condition_dims(),
        )

    def call_network(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        """Predicted noise; ``drop`` marks rows that get the null condition."""
        return net(x, t, labels, drop)

    def _condition_dims(self) -> dict[str, int]:
        return {}

    def _train_condition(
        self, labels: torch.Tensor | None, n: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(labels, drop mask) fed to the network in training."""
        return None, None

    def predict_eps(
        self, net: nn.Module, x: torch.Tensor, t: int | float, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The noise estimate the sampler uses at time index ``t``."""
        return self._forward(net, x, t, None)

    def passes_per_step(self) -> int:
        return 1

    # -- contract ----------------------------------------------------------
    @classmethod
    def check_spec(cls, spec: DataSpec, config: DDPMConfig) -> None:
        check_resolution(spec.resolution, len(config.channel_mults))
        side = spec.resolution
        for level, mult in enumerate(config.channel_mults):
            width = config.base_channels * mult
            last = level == len(config.channel_mults) - 1
            if (side in config.attn_resolutions or last) and width % config.num_heads:
                raise ValueError(
                    f"width {width} at {side}x{side} cannot be split into {config.num_heads} attention heads"
                )
            side //= 2

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self.opt}

    def extra_state(self) -> dict[str, Any]:
        # The EMA copy is state, not a network of its own: it is not counted as parameters.
        return {"ema": self.ema.state_dict(), "step": self.step}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])

    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        lr = self._set_lr(len(images))
        loss = self._loss(self.net, images, labels, generator=None, train=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        logs = {"loss": loss.item(), "lr": lr}
        if self.config.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
            logs["grad_norm"] = norm.item()
        self.opt.step()
        self.ema.update(self.net)
        self.step += 1
        return logs

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        # Fixed t and noise per call, so held-out losses are comparable across evaluations.
        g = torch.Generator().manual_seed(0)
        loss = self._loss(self.sampling_net(), images, labels, generator=g, train=False)
        return {"test_loss": loss.item()}

    def sampling_net(self) -> nn.Module:
        return self.ema.module if self.config.use_ema else self.net

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        c, s = self.config, self.spec
        x = torch.randn(n, s.channels, s.resolution, s.resolution, generator=generator)
        x = x.to(self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.sampling_net()
        lab = labels.to(self.device) if labels is not None and self.conditional else None
        x = run_sampler(
            lambda xt, t: self.predict_eps(net, xt, t, lab),
            x,
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

    # -- internals ---------------------------------------------------------
    def _sample_precision(self) -> str:
        return "auto" if self.config.sample_bf16 else "fp32"

    def _forward(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: int | float,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        dtype = torch.long if isinstance(t, int) else torch.float32
        tt = torch.full((len(x),), t, dtype=dtype, device=x.device)
        with autocast(self.device, self._sample_precision()):
            return self.call_network(net, x, tt, labels, drop).float()

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
            noise = torch.randn_like(images)
        else:
            t = torch.randint(0, self.schedule.timesteps, (n,), generator=generator).to(self.device)
            noise = torch.randn(images.shape, generator=generator).to(self.device)
        xt = self.schedule.add_noise(images, noise, t)
        if train:
            cond, drop = self._train_condition(labels, n)
        else:
            cond, drop = (labels if self.conditional else None), None
        eps = self.call_network(net, xt, t, cond, drop)
        return F.mse_loss(eps.float(), noise.float())

    def _set_lr(self, batch_size: int) -> float:
        c = self.config
        # The framework does not tell a model its budget: schedule_kimg does, in images.
        total = math.ceil(c.schedule_kimg * 1000 / batch_size) if c.schedule_kimg else None
        lr = c.lr * lr_factor(
            self.step, kind=c.lr_schedule, total_steps=total, warmup_steps=c.warmup_steps
        )
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr
