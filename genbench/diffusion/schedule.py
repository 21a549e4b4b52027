"""The Gaussian noise schedule of DDPM (Ho et al. 2020) and the samplers built on it.

Weight-free: the tables are float64 tensors computed once. Time indices are
0-based, so index ``t`` is the paper's step ``t + 1``; index ``-1`` stands for
clean data (alpha-bar = 1). Every reverse step goes from ``t`` to any earlier
``t_prev``, which makes ancestral sampling on a subset of steps (respacing) and
DDIM the same few formulas.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ScheduleKind = Literal["linear", "cosine", "custom"]  # custom: explicit betas
AncestralVariance = Literal["beta", "posterior"]
Time = int | torch.Tensor


def linear_betas(
    timesteps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """DDPM's linear betas in float64."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, *, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha-bar(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


class NoiseSchedule:
    """Forward process q(x_t | x_0), posteriors, and the ancestral and DDIM reverse steps.

    Args:
        kind: ``"linear"`` (betas from ``beta_start`` to ``beta_end``) or ``"cosine"``.
        timesteps: T, the number of diffusion steps.
        beta_start, beta_end: the linear schedule's end points.
        cosine_s, max_beta: the cosine schedule's offset and beta clip.
        betas: explicit betas instead (``kind`` becomes ``"custom"``, T their count).

    ``t`` arguments are a Python int (one step for the whole batch, as in
    sampling) or an int64 tensor with one index per image (as in training).
    Coefficients are computed in float64 and cast to the data's dtype last.
    """

    def __init__(
        self,
        *,
        kind: ScheduleKind = "linear",
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        max_beta: float = 0.999,
        betas: torch.Tensor | None = None,
    ) -> None:
        if betas is not None:  # explicit betas (a pretrained model's), T taken from them
            kind, timesteps = "custom", len(betas)
        if timesteps < 1:
            raise ValueError(f"timesteps must be at least 1, got {timesteps}")
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64)
            if not bool(((betas > 0) & (betas < 1)).all()):
                raise ValueError("explicit betas must lie in (0, 1)")
        elif kind == "linear":
            betas = linear_betas(timesteps, beta_start=beta_start, beta_end=beta_end)
        elif kind == "cosine":
            betas = cosine_betas(timesteps, s=cosine_s, max_beta=max_beta)
        else:
            raise ValueError(f"unknown schedule {kind!r} (use 'linear' or 'cosine')")
        self.kind, self.timesteps = kind, timesteps
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # alpha-bar with index -1 (clean data, alpha-bar 1) in front, so ab(t) = _ab[t + 1].
        self._ab = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        self._ab_on: dict[torch.device, torch.Tensor] = {}

    # -- lookups ---------------------------------------------------------------
    def _alpha_bar(self, t: Time, like: torch.Tensor) -> float | torch.Tensor:
        if isinstance(t, int):
            if not -1 <= t < self.timesteps:
                raise IndexError(f"time index {t} outside [-1, {self.timesteps})")
            return float(self._ab[t + 1])
        dev = like.device
        if dev not in self._ab_on:
            # MPS has no float64; everything else keeps the float64 table.
            self._ab_on[dev] = self._ab.to(
                dev, torch.float32 if dev.type == "mps" else torch.float64
            )
        return self._ab_on[dev][t.to(dev) + 1]

    @staticmethod
    def _bc(c: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
        """A coefficient broadcast over an NCHW batch, in the batch's dtype."""
        if isinstance(c, float):
            return c
        return c.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def _prev(self, t: Time, t_prev: Time | None) -> Time:
        return t - 1 if t_prev is None else t_prev

    # -- forward process -------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: Time) -> torch.Tensor:
        """A draw from q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I) using the given noise."""
        ab = self._alpha_bar(t, x0)
        return self._bc(ab**0.5, x0) * x0 + self._bc((1 - ab) ** 0.5, x0) * noise

    def predict_x0(self, xt: torch.Tensor, eps: torch.Tensor, t: Time) -> torch.Tensor:
        ab = self._alpha_bar(t, xt)
        return (xt - self._bc((1 - ab) ** 0.5, xt) * eps) / self._bc(ab**0.5, xt)

    def eps_from_x0(self, xt: torch.Tensor, x0: torch.Tensor, t: Time) -> torch.Tensor:
        ab = self._alpha_bar(t, xt)
        return (xt - self._bc(ab**0.5, xt) * x0) / self._bc((1 - ab) ** 0.5, xt)

    def posterior(
        self, x0: torch.Tensor, xt: torch.Tensor, t: Time, t_prev: Time | None = None
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        """Mean and variance of q(x_{t_prev} | x_t, x_0); ``t_prev`` defaults to ``t - 1``.

        For ``t_prev = t - 1`` this is DDPM eq. 7: mean = sqrt(ab_{t-1}) b_t/(1-ab_t) x_0
        + sqrt(a_t)(1-ab_{t-1})/(1-ab_t) x_t and variance beta-tilde_t.
        """
        ab_t, ab_p = self._alpha_bar(t, xt), self._alpha_bar(self._prev(t, t_prev), xt)
        a = ab_t / ab_p  # alpha of the (possibly respaced) step
        b = 1 - a
        c0 = ab_p**0.5 * b / (1 - ab_t)
        ct = a**0.5 * (1 - ab_p) / (1 - ab_t)
        var = b * (1 - ab_p) / (1 - ab_t)
        return self._bc(c0, xt) * x0 + self._bc(ct, xt) * xt, self._bc(var, xt)

    # -- reverse steps ---------------------------------------------------------
    def _x0(self, xt: torch.Tensor, eps: torch.Tensor, t: Time, clip: float | None) -> torch.Tensor:
        x0 = self.predict_x0(xt, eps, t)
        return x0.clamp(-clip, clip) if clip is not None else x0

    def ancestral_mean_var(
        self,
        eps: torch.Tensor,
        xt: torch.Tensor,
        t: Time,
        t_prev: Time | None = None,
        *,
        variance: AncestralVariance = "beta",
        clip: float | None = None,
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        """p(x_{t_prev} | x_t) of ancestral sampling with the network's noise estimate.

        The mean is the posterior mean at the predicted x_0 (equal to DDPM's
        1/sqrt(a_t) (x_t - b_t/sqrt(1-ab_t) eps) when ``clip`` is None). Variance:
        ``"beta"`` is b_t (DDPM's sigma² = beta, as in seed 001) and ``"posterior"``
        is beta-tilde_t. The last step (to clean data) adds no noise either way.
        """
        tp = self._prev(t, t_prev)
        mean, post_var = self.posterior(self._x0(xt, eps, t, clip), xt, t, tp)
        if variance == "posterior":
            return mean, post_var
        if variance != "beta":
            raise ValueError(f"unknown ancestral variance {variance!r} (use 'beta' or 'posterior')")
        var = 1 - self._alpha_bar(t, xt) / self._alpha_bar(tp, xt)
        if isinstance(tp, int):
            var = 0.0 if tp < 0 else var
        else:
            var = torch.where(tp.to(xt.device) < 0, 0.0, var)
        return mean, self._bc(var, xt)

    def ddim_mean_var(
        self,
        eps: torch.Tensor,
        xt: torch.Tensor,
        t: Time,
        t_prev: Time,
        *,
        eta: float = 0.0,
        clip: float | None = None,
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        """DDIM (Song et al. 2020, eq. 12) from ``t`` to ``t_prev``.

        x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma²) eps + sigma z with
        sigma = eta sqrt((1-ab_prev)/(1-ab_t)) sqrt(1 - ab_t/ab_prev). When x_0 is
        clipped, eps is re-derived from the clipped x_0 so the step stays on the
        same line (as guided-diffusion does); eta = 1 on all T steps is then
        exactly ancestral sampling with the posterior variance.
        """
        ab_t, ab_p = self._alpha_bar(t, xt), self._alpha_bar(t_prev, xt)
        x0 = self._x0(xt, eps, t, clip)
        if clip is not None:
            eps = self.eps_from_x0(xt, x0, t)
        var = eta**2 * (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)
        mean = self._bc(ab_p**0.5, xt) * x0 + self._bc((1 - ab_p - var) ** 0.5, xt) * eps
        return mean, self._bc(var, xt)

    @staticmethod
    def apply_noise(
        mean: torch.Tensor, var: float | torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """mean + sqrt(var)·noise; a zero variance needs no noise."""
        if noise is None or (isinstance(var, float) and var == 0.0):
            return mean
        return mean + (var**0.5) * noise

    def sampling_timesteps(self, steps: int | None = None) -> list[int]:
        """Descending time indices of an S-step sampler: S evenly spaced indices
        from T-1 down to 0 (all T when ``steps`` is None or T)."""
        s = self.timesteps if steps is None else steps
        if not 1 <= s <= self.timesteps:
            raise ValueError(f"sample steps must be in [1, {self.timesteps}], got {s}")
        idx = torch.linspace(0, self.timesteps - 1, s, dtype=torch.float64).round().long()
        return sorted({int(i) for i in idx}, reverse=True)
