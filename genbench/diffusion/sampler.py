"""The reverse-process loop: ancestral (DDPM) or DDIM steps over a subset of time indices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from genbench.diffusion.schedule import AncestralVariance, NoiseSchedule

SamplerName = Literal["ddpm", "ddim"]
#: eps_fn(x_t, t) -> predicted noise, for a batch at one time index.
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def run_sampler(
    eps_fn: EpsFn,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    sampler: SamplerName = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    variance: AncestralVariance = "beta",
    clip: float | None = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise ``x`` (pure noise at t = T-1) to x_0.

    ``steps`` time indices are visited (all T when None). ``"ddpm"`` takes
    ancestral steps between consecutive visited indices (respaced when fewer
    than T), ``"ddim"`` takes DDIM steps with ``eta``. Step noise is drawn on
    the CPU from ``generator`` and moved, so results do not depend on the device.
    """
    ts = schedule.sampling_timesteps(steps)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps = eps_fn(x, t).to(x.dtype)
        if sampler == "ddim":
            mean, var = schedule.ddim_mean_var(eps, x, t, t_prev, eta=eta, clip=clip)
        elif sampler == "ddpm":
            mean, var = schedule.ancestral_mean_var(eps, x, t, t_prev, variance=variance, clip=clip)
        else:
            raise ValueError(f"unknown sampler {sampler!r} (use 'ddpm' or 'ddim')")
        noise = None
        if not (isinstance(var, float) and var == 0.0):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = schedule.apply_noise(mean, var, noise)
    return x
