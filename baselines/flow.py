"""Conditional flow matching on the linear (rectified-flow) path (Lipman et al. 2023; Liu et
al. 2023), velocity prediction on the shared UNet.

Noise x0 ~ N(0, I) and an image x1 are joined by the straight line
``x_t = (1 - t) x0 + t x1``; the network learns its velocity ``x1 - x0`` at x_t by MSE.
Training times follow a logit-normal distribution (``t = sigmoid(m + s n)``, m = 0,
s = 1) by default: Esser et al. (2024) compared the rectified-flow time samplers and
found it the best, because it spends the updates on the middle of the path, where
the velocity is hardest to predict, and few at the ends, where it is nearly the
data mean (t = 0) or the image itself (t = 1). ``time_sampling = "uniform"`` is the
original papers' choice. Samples integrate ``dx/dt = v(x, t)`` from t = 0 to 1 on
an even grid with Euler or Heun (:mod:`genbench.diffusion.ode`; Heun's 18 steps are
35 evaluations, edm's default cost). The network sees ``1000 t``, the range of time
indices the UNet's sinusoidal embedding was laid out for (ddpm's 0-999).

Everything else (optimiser, EMA, conditioning, the train step) is
:class:`genbench.diffusion.model.UNetGenerator`'s, as for ddpm. ``conditional = true``
conditions on the data's classes or attributes with classifier-free guidance in
cddpm's form (label dropout to a learned null; the velocity is guided as
``lerp(v_null, v_cond, guidance_scale)``, both passes in one call).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from genbench.diffusion.model import (
    OptimConfig,
    OptionalGuidanceConfig,
    UNetConfig,
    UNetGenerator,
)
from genbench.diffusion.ode import OdeSolver, solve_ode, solver_nfe, uniform_times
from genbench.utils.device import precision_name

#: The network's time input is 1000 t: the UNet's embedding is laid out for indices 0-999.
TIME_SCALE = 1000.0


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The linear path ``(1 - t) x0 + t x1`` at per-image times ``t`` (N,)."""
    tb = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - tb) * x0 + tb * x1


def velocity_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """d x_t / dt on the linear path: ``x1 - x0``, the same at every t."""
    return x1 - x0


class FlowConfig(OptionalGuidanceConfig, UNetConfig, OptimConfig):
    """Flow matching: ddpm's UNet and optimisation, its own time sampling and ODE sampler."""

    time_sampling: Literal["logit-normal", "uniform"] = Field(
        "logit-normal",
        description="training times: sigmoid of a normal (Esser et al. 2024) or uniform on [0, 1]",
    )
    logit_mean: float = Field(0.0, description="mean of the logit-normal's normal")
    logit_std: float = Field(
        1.0, gt=0, description="standard deviation of the logit-normal's normal"
    )
    sampler: OdeSolver = Field("heun", description="ODE solver: euler or heun (2nd order)")
    sample_steps: int = Field(
        18, ge=1, description="ODE steps from t = 0 to 1 (heun: 2n - 1 evaluations, 18 = 35)"
    )


class Flow(UNetGenerator):
    """Rectified-flow velocity model sampled by an Euler or Heun ODE solver."""

    Config = FlowConfig
    config: FlowConfig
    sampling_keys = frozenset(
        {"sampler", "sample_steps", "use_ema", "sample_bf16", "guidance_scale"}
    )

    @classmethod
    def sampler_variants(cls, config: FlowConfig) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[override]
        n = config.sample_steps
        return [
            (f"euler ({n})", {"sampler": "euler"}),
            (f"heun ({n})", {"sampler": "heun"}),
        ]

    def call_network(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        """The velocity at times ``t`` in [0, 1]."""
        return net(x, t * TIME_SCALE, labels, drop)

    def _times(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        c = self.config
        if c.time_sampling == "uniform":
            t = torch.rand(n, generator=generator)
        else:
            t = torch.sigmoid(c.logit_mean + c.logit_std * torch.randn(n, generator=generator))
        return t.to(self.device)

    def _loss(
        self,
        net: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        generator: torch.Generator | None,
        train: bool,
    ) -> torch.Tensor:
        """Conditional flow matching: MSE between the predicted and the path's velocity."""
        t = self._times(len(images), generator)
        x0 = self._noise(images, generator)
        cond, drop = self._condition(labels, len(images), train=train)
        v = self.call_network(net, interpolate(x0, images, t), t, cond, drop)
        return F.mse_loss(v.float(), velocity_target(x0, images).float())

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
        x = solve_ode(
            lambda xt, t: self.predict(net, xt, t, lab),
            self._initial_noise(n, generator),
            uniform_times(c.sample_steps),
            solver=c.sampler,
        )
        return ((x.float().clamp(-1, 1) + 1) / 2).contiguous()

    def sampling_protocol(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "sampler": c.sampler,
            "nfe": solver_nfe(c.sampler, c.sample_steps) * self.passes_per_step(),
            "steps": c.sample_steps,
            "path": "linear (rectified flow)",
            "time_grid": "uniform",
            "ema": c.use_ema,
            "precision": precision_name(self.device, self._sample_precision()),
        }
        if self.conditional:
            out["guidance_scale"] = c.guidance_scale
        return out
