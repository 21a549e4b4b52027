"""What the UNet generators (ddpm, cddpm, flow, edm) share: network, optimiser, EMA,
conditioning with classifier-free guidance, the train step and checkpointed state.

A subclass supplies the objective (:meth:`UNetGenerator._loss`), its sampler
(``sample``, ``sampling_protocol``) and, where its network input or output is not
the plain UNet's, :meth:`UNetGenerator.call_network` (flow rescales time, edm wraps
the UNet in its preconditioning). Conditioning is cddpm's form for every model:
label dropout to a learned null condition in training, ``lerp(uncond, cond, scale)``
of both passes, batched into one network call, in sampling.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from genbench.contract import DataSpec, Generator, GeneratorConfig
from genbench.diffusion.ema import EMA
from genbench.diffusion.lr import lr_factor
from genbench.diffusion.unet import UNet, check_resolution
from genbench.utils.device import autocast

#: A sampling time for the whole batch: a DDPM index (int), a flow time or an EDM sigma.
Time = int | float


class OptimConfig(GeneratorConfig):
    """Optimisation, EMA and sampling precision: the same for every UNet generator."""

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
    use_ema: bool = Field(True, description="sample from the EMA weights")
    sample_bf16: bool = Field(
        True,
        description="bf16 autocast of the network in sampling where the device computes bf16 "
        "natively (CUDA, CPUs with AVX512-BF16/AMX); fp32 elsewhere",
    )

    @model_validator(mode="after")
    def _schedule_span(self) -> OptimConfig:
        if self.lr_schedule != "constant" and self.schedule_kimg is None:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} needs schedule_kimg (set it to train.kimg)"
            )
        return self


class UNetConfig(GeneratorConfig):
    """The shared UNet, sized for the 2-core CPU reference machine at 32x32."""

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

    def check(self, spec: DataSpec) -> None:
        """Raise ValueError when the UNet cannot be built for ``spec``."""
        check_resolution(spec.resolution, len(self.channel_mults))
        side = spec.resolution
        for level, mult in enumerate(self.channel_mults):
            width = self.base_channels * mult
            last = level == len(self.channel_mults) - 1
            if (side in self.attn_resolutions or last) and width % self.num_heads:
                raise ValueError(
                    f"width {width} at {side}x{side} cannot be split into {self.num_heads} attention heads"
                )
            side //= 2


class GuidanceConfig(GeneratorConfig):
    """Classifier-free guidance: shared by cddpm, diffusers-unet and conditional flow / edm."""

    guidance_scale: float = Field(3.0, description="1 = conditional, 0 = unconditional")
    label_dropout: float = Field(0.1, ge=0, le=1, description="share of labels replaced by null")


class OptionalGuidanceConfig(GuidanceConfig):
    """Conditioning as a setting (flow, edm) rather than a model of its own (cddpm)."""

    conditional: bool = Field(
        False,
        description="condition on the data's classes or attributes, with classifier-free "
        "guidance (cddpm's form); false = unconditional, as ddpm",
    )


def require_condition(spec: DataSpec, *, what: str) -> None:
    """Raise ValueError when a conditional model is given data without labels."""
    if spec.condition == "none" or (spec.num_classes == 0 and spec.num_attributes == 0):
        raise ValueError(
            f"{what} needs class labels or attributes, but the data has none (data.condition = 'none')"
        )


def guided(
    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    scale: float,
) -> torch.Tensor:
    """``lerp(predict(x, null), predict(x, labels), scale)`` from one batched call of 2N rows.

    ``predict(x, labels, drop)`` is the network's output with rows ``drop`` given the null
    condition; the output may be noise, a velocity or a denoised image: each is affine in the
    others at fixed x and t, so guiding any of them is the same guidance.
    """
    n = len(x)
    drop = torch.arange(2 * n, device=x.device) >= n  # first half conditional, second null
    out = predict(torch.cat([x, x]), torch.cat([labels, labels]), drop)
    return torch.lerp(out[n:], out[:n], scale)


class UNetGenerator(Generator):
    """A network trained with AdamW, gradient clipping, warm-up and EMA; conditional with
    classifier-free guidance when ``conditional`` is true (cddpm, or the ``conditional`` key)."""

    def __init__(
        self,
        *,
        spec: DataSpec,
        config: Any,
        device: torch.device,
        train_data: Any = None,
        network: nn.Module | None = None,
    ) -> None:
        """``network``, when given, replaces the one the config describes (pretrained weights)."""
        if isinstance(config, OptionalGuidanceConfig):
            self.conditional = config.conditional  # a setting here (flow, edm), not a model
        super().__init__(spec=spec, config=config, device=device, train_data=train_data)
        c = config
        self.net = (network if network is not None else self.build_network()).to(self.device)
        if self.device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.ema = EMA(self.net, decay=c.ema_decay, start_step=c.ema_start)
        self.step = 0

    # -- what a subclass supplies ----------------------------------------------------
    @abstractmethod
    def _loss(
        self,
        net: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        generator: torch.Generator | None,
        train: bool,
    ) -> torch.Tensor:
        """The objective on a batch; with ``generator``, its noise and times come from it."""

    def call_network(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        """The model's prediction (noise, velocity, denoised image); ``drop`` marks rows
        that get the null condition."""
        return net(x, t, labels, drop)

    def build_network(self) -> nn.Module:
        """The shared UNet, with a condition embedding when the model is conditional."""
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

    # -- conditioning -----------------------------------------------------------------
    def _condition_dims(self) -> dict[str, int]:
        if not self.conditional:
            return {}
        if self.spec.condition == "attributes":
            return {"num_attributes": self.spec.num_attributes}
        return {"num_classes": self.spec.num_classes}

    def _train_condition(
        self, labels: torch.Tensor | None, n: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(labels, drop mask) fed to the network in training: label dropout to the null."""
        if labels is None or not self.conditional:
            return None, None
        drop = torch.rand(n, device=labels.device) < self.config.label_dropout
        return labels, drop

    def passes_per_step(self) -> int:
        """Network passes per sampler evaluation: 2 with guidance."""
        return 2 if self.conditional else 1

    def predict(
        self, net: nn.Module, x: torch.Tensor, t: Time, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The prediction the sampler uses at time ``t``: guided when there are labels."""
        if labels is None or not self.conditional:
            return self._forward(net, x, t, None)
        return self.guided(net, x, t, labels, scale=self.config.guidance_scale)

    def guided(
        self, net: nn.Module, x: torch.Tensor, t: Time, labels: torch.Tensor, *, scale: float
    ) -> torch.Tensor:
        """lerp(prediction(x, null), prediction(x, labels), scale), one batched call."""
        return guided(lambda xx, ll, dd: self._forward(net, xx, t, ll, dd), x, labels, scale=scale)

    # -- contract -------------------------------------------------------------------
    @classmethod
    def check_spec(cls, spec: DataSpec, config: Any) -> None:
        if isinstance(config, OptionalGuidanceConfig) and config.conditional:
            require_condition(spec, what=f"{cls.__name__.lower()} with conditional = true")
        config.check(spec)

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
        # Fixed times and noise per call, so held-out losses are comparable across evaluations.
        g = torch.Generator().manual_seed(0)
        loss = self._loss(self.sampling_net(), images, labels, generator=g, train=False)
        return {"test_loss": loss.item()}

    def sampling_net(self) -> nn.Module:
        return self.ema.module if self.config.use_ema else self.net

    # -- helpers for subclasses -----------------------------------------------------------
    def _noise(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise like ``images``: from ``generator`` (on the CPU) when given."""
        if generator is None:
            return torch.randn_like(images)
        return torch.randn(images.shape, generator=generator).to(images.device)

    def _condition(
        self, labels: torch.Tensor | None, n: int, *, train: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Training conditions get label dropout; held-out evaluation uses the labels as given."""
        if train:
            return self._train_condition(labels, n)
        return (labels if self.conditional else None), None

    def _initial_noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        s = self.spec
        x = torch.randn(n, s.channels, s.resolution, s.resolution, generator=generator)
        x = x.to(self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _sample_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return labels.to(self.device) if labels is not None and self.conditional else None

    def _sample_precision(self) -> str:
        return "auto" if self.config.sample_bf16 else "fp32"

    def _forward(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: Time,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        dtype = torch.long if isinstance(t, int) else torch.float32
        tt = torch.full((len(x),), t, dtype=dtype, device=x.device)
        with autocast(self.device, self._sample_precision()):
            return self.call_network(net, x, tt, labels, drop).float()

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
