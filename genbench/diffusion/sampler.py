"""The reverse-process loop: ancestral (DDPM) or DDIM steps over a subset of time indices,
or any diffusers scheduler (:mod:`genbench.diffusion.schedulers`) on the same betas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from genbench.diffusion.schedule import AncestralVariance, NoiseSchedule
from genbench.diffusion.schedulers import (
    DIFFUSERS_SAMPLERS,
    DiffusersSamplerName,
    run_diffusers_sampler,
    scheduler_plan,
)

BuiltinSamplerName = Literal["ddpm", "ddim"]
SamplerName = BuiltinSamplerName | DiffusersSamplerName
#: eps_fn(x_t, t) -> predicted noise, for a batch at one time index (a float only when a
#: diffusers scheduler asks for a fractional one).
EpsFn = Callable[[torch.Tensor, int | float], torch.Tensor]


# params: the sampler's settings, each a field of the diffusion models' configs
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
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """Denoise ``x`` (pure noise at t = T-1) to x_0.

    ``steps`` time indices are visited (all T when None). ``"ddpm"`` takes
    ancestral steps between consecutive visited indices (respaced when fewer
    than T), ``"ddim"`` takes DDIM steps with ``eta``; ``timesteps`` gives the
    built-in samplers an explicit descending list instead. Any other name is a
    diffusers scheduler (see ``DIFFUSERS_SAMPLERS``). Step noise is drawn on
    the CPU from ``generator`` and moved, so results do not depend on the device.
    """
    if sampler in DIFFUSERS_SAMPLERS:
        if timesteps is not None:
            raise ValueError("explicit timesteps are for the built-in samplers only")
        return run_diffusers_sampler(
            eps_fn,
            x,
            schedule,
            sampler=sampler,
            steps=steps,
            eta=eta,
            variance=variance,
            clip=clip,
            generator=generator,
        )
    ts = list(timesteps) if timesteps is not None else schedule.sampling_timesteps(steps)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps = eps_fn(x, t).to(x.dtype)
        if sampler == "ddim":
            mean, var = schedule.ddim_mean_var(eps, x, t, t_prev, eta=eta, clip=clip)
        elif sampler == "ddpm":
            mean, var = schedule.ancestral_mean_var(eps, x, t, t_prev, variance=variance, clip=clip)
        else:
            known = ", ".join(["ddpm", "ddim", *DIFFUSERS_SAMPLERS])
            raise ValueError(f"unknown sampler {sampler!r} (known: {known})")
        noise = None
        if not (isinstance(var, float) and var == 0.0):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = schedule.apply_noise(mean, var, noise)
    return x


def sampler_plan(schedule: NoiseSchedule, *, sampler: str, steps: int | None) -> dict[str, Any]:
    """What a sampler will do, without running it: its steps and network evaluations
    per pass (``nfe_per_pass``; guidance multiplies it), for the sampling protocol."""
    if sampler in DIFFUSERS_SAMPLERS:
        return scheduler_plan(sampler, schedule, steps)
    n = len(schedule.sampling_timesteps(steps))
    return {"steps": n, "nfe_per_pass": n}
