"""Pieces shared by the diffusion baselines: noise schedule, samplers, ODE solvers, UNet, EMA,
LR schedules and the UNet generators' common base."""

from genbench.diffusion.ema import EMA
from genbench.diffusion.lr import LRSchedule, lr_factor
from genbench.diffusion.model import (
    GuidanceConfig,
    OptimConfig,
    OptionalGuidanceConfig,
    UNetConfig,
    UNetGenerator,
)
from genbench.diffusion.ode import OdeSolver, karras_sigmas, solve_ode, solver_nfe, uniform_times
from genbench.diffusion.sampler import SamplerName, run_sampler, sampler_plan
from genbench.diffusion.schedule import NoiseSchedule, cosine_betas, linear_betas
from genbench.diffusion.schedulers import DIFFUSERS_SAMPLERS, diffusers_available, make_scheduler
from genbench.diffusion.unet import ConditionEmbedding, UNet, check_resolution

__all__ = [
    "DIFFUSERS_SAMPLERS",
    "EMA",
    "ConditionEmbedding",
    "GuidanceConfig",
    "LRSchedule",
    "NoiseSchedule",
    "OdeSolver",
    "OptimConfig",
    "OptionalGuidanceConfig",
    "SamplerName",
    "UNet",
    "UNetConfig",
    "UNetGenerator",
    "check_resolution",
    "cosine_betas",
    "diffusers_available",
    "karras_sigmas",
    "linear_betas",
    "lr_factor",
    "make_scheduler",
    "run_sampler",
    "sampler_plan",
    "solve_ode",
    "solver_nfe",
    "uniform_times",
]
