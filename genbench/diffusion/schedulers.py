"""diffusers schedulers as samplers over genbench's noise schedule (``genbench[diffusers]``).

Each scheduler is built on the exact betas of the run's :class:`NoiseSchedule`
(``trained_betas``, epsilon prediction), so a network trained by genbench's ddpm
or cddpm, or by the diffusers-unet generator, can be sampled by any of them.
All of them visit "trailing" time indices (T-1 down to T/S - 1), the spacing
that starts at pure noise and keeps DDIM's step ``t -> t - T/S`` consistent
with its list of indices; genbench's own ``ddpm``/``ddim`` visit
``linspace(0, T-1, S)`` as before. diffusers is imported only when one of these
samplers is used.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from genbench.diffusion.schedule import AncestralVariance, NoiseSchedule
from genbench.utils.errors import MissingExtra

DiffusersSamplerName = Literal[
    "diffusers-ddpm",
    "diffusers-ddim",
    "dpmpp",
    "dpmpp-3m",
    "unipc",
    "deis",
    "euler",
    "euler-ancestral",
    "heun",
    "lms",
]

SPACING = "trailing"


@dataclass(frozen=True)
class _Spec:
    cls: str  # the diffusers scheduler class
    label: str  # how reports name it
    options: dict[str, Any] = field(default_factory=dict)


DIFFUSERS_SAMPLERS: dict[str, _Spec] = {
    "diffusers-ddpm": _Spec("DDPMScheduler", "DDPM (diffusers)"),
    "diffusers-ddim": _Spec("DDIMScheduler", "DDIM (diffusers)", {"set_alpha_to_one": True}),
    "dpmpp": _Spec(
        "DPMSolverMultistepScheduler",
        "DPM-Solver++ 2M",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "dpmpp-3m": _Spec(
        "DPMSolverMultistepScheduler",
        "DPM-Solver++ 3M",
        {"algorithm_type": "dpmsolver++", "solver_order": 3},
    ),
    "unipc": _Spec("UniPCMultistepScheduler", "UniPC (bh2)"),
    "deis": _Spec("DEISMultistepScheduler", "DEIS"),
    "euler": _Spec("EulerDiscreteScheduler", "Euler"),
    "euler-ancestral": _Spec("EulerAncestralDiscreteScheduler", "Euler ancestral"),
    "heun": _Spec("HeunDiscreteScheduler", "Heun"),
    "lms": _Spec("LMSDiscreteScheduler", "LMS"),
}


def diffusers_available() -> bool:
    try:
        import diffusers  # noqa: F401  (lazy-loading package: the import itself is cheap)
    except ImportError:
        return False
    return True


def require_diffusers(what: str) -> None:
    """Raise a one-line :class:`MissingExtra` unless diffusers can be imported."""
    if not diffusers_available():
        raise MissingExtra(f"{what} needs the diffusers package: pip install 'genbench[diffusers]'")


def is_diffusers_sampler(name: str) -> bool:
    return name in DIFFUSERS_SAMPLERS


def make_scheduler(
    name: str,
    schedule: NoiseSchedule,
    *,
    variance: AncestralVariance = "beta",
    clip: float | None = None,
) -> Any:
    """A fresh diffusers scheduler ``name`` on ``schedule``'s betas (epsilon prediction).

    ``clip`` clamps the predicted x_0 where the scheduler supports it (DDPM, DDIM);
    ``variance`` picks the DDPM scheduler's ``fixed_large`` (beta) or ``fixed_small``
    (posterior) variance, as genbench's ancestral sampler does.
    """
    if name not in DIFFUSERS_SAMPLERS:
        known = ", ".join(DIFFUSERS_SAMPLERS)
        raise ValueError(f"unknown diffusers sampler {name!r} (known: {known})")
    require_diffusers(f"sampler {name!r}")
    import diffusers

    spec = DIFFUSERS_SAMPLERS[name]
    kwargs: dict[str, Any] = {
        "num_train_timesteps": schedule.timesteps,
        "trained_betas": schedule.betas.numpy(),
        "prediction_type": "epsilon",
        "timestep_spacing": SPACING,
        **spec.options,
    }
    if spec.cls in ("DDPMScheduler", "DDIMScheduler"):
        kwargs.update(clip_sample=clip is not None, clip_sample_range=clip or 1.0)
    if spec.cls == "DDPMScheduler":
        kwargs["variance_type"] = {"beta": "fixed_large", "posterior": "fixed_small"}[variance]
    return getattr(diffusers, spec.cls)(**kwargs)


def scheduler_plan(name: str, schedule: NoiseSchedule, steps: int | None) -> dict[str, Any]:
    """Steps, network evaluations per pass and time indices of a diffusers sampler.

    NFE is counted from the scheduler's own list of model calls: Heun lists every
    index but the first twice, i.e. 2 evaluations per step except the last.
    """
    sch = make_scheduler(name, schedule)
    s = _steps(schedule, steps)
    sch.set_timesteps(s)
    return {
        "steps": s,
        "nfe_per_pass": len(sch.timesteps),
        "scheduler": type(sch).__name__,
        "label": DIFFUSERS_SAMPLERS[name].label,
        "timestep_spacing": SPACING,
    }


def _steps(schedule: NoiseSchedule, steps: int | None) -> int:
    s = schedule.timesteps if steps is None else steps
    if not 1 <= s <= schedule.timesteps:
        raise ValueError(f"sample steps must be in [1, {schedule.timesteps}], got {s}")
    return s


def _model_time(t: torch.Tensor) -> int | float:
    # Trailing spacing gives integer indices; keep any fractional one as it is.
    v = float(t)
    return round(v) if abs(v - round(v)) < 1e-4 else v


# params: run_sampler's settings, passed on to a diffusers scheduler
@torch.no_grad()
def run_diffusers_sampler(
    eps_fn: Any,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    sampler: str,
    steps: int | None = None,
    eta: float = 0.0,
    variance: AncestralVariance = "beta",
    clip: float | None = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise ``x`` (unit-variance noise) with a diffusers scheduler; ``eps_fn(x, t)``
    is the network's noise estimate at time index ``t``. Step noise comes from the
    CPU ``generator`` (diffusers draws on its device, then moves)."""
    sch = make_scheduler(sampler, schedule, variance=variance, clip=clip)
    sch.set_timesteps(_steps(schedule, steps), device=x.device)
    accepts = set(inspect.signature(sch.step).parameters)
    extra: dict[str, Any] = {}
    if "generator" in accepts:
        extra["generator"] = generator
    if "eta" in accepts:  # DDIM; genbench's DDIM re-derives eps from a clipped x_0 too
        extra.update(eta=eta, use_clipped_model_output=clip is not None)
    x = x * sch.init_noise_sigma
    for t in sch.timesteps:
        eps = eps_fn(sch.scale_model_input(x, t), _model_time(t)).to(x.dtype)
        x = sch.step(eps, t, x, **extra).prev_sample
    return x
