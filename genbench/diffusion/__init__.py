"""Pieces shared by the diffusion baselines: noise schedule, samplers, UNet, EMA, LR schedules."""

from genbench.diffusion.ema import EMA
from genbench.diffusion.lr import LRSchedule, lr_factor
from genbench.diffusion.sampler import SamplerName, run_sampler, sampler_plan
from genbench.diffusion.schedule import NoiseSchedule, cosine_betas, linear_betas
from genbench.diffusion.schedulers import DIFFUSERS_SAMPLERS, diffusers_available, make_scheduler
from genbench.diffusion.unet import ConditionEmbedding, UNet, check_resolution

__all__ = [
    "DIFFUSERS_SAMPLERS",
    "EMA",
    "ConditionEmbedding",
    "LRSchedule",
    "NoiseSchedule",
    "SamplerName",
    "UNet",
    "check_resolution",
    "cosine_betas",
    "diffusers_available",
    "linear_betas",
    "lr_factor",
    "make_scheduler",
    "run_sampler",
    "sampler_plan",
]
