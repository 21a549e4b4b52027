"""Deterministic ODE samplers and the time grids they step on (flow matching, EDM).

Weight-free: a sampler gets the ODE's right-hand side as a function ``dx/dt = f(x, t)``
and a grid of times, and knows nothing of networks. Flow matching integrates its
velocity from t = 0 (noise) to t = 1 (data); EDM integrates
``dx/dsigma = (x - D(x; sigma)) / sigma`` from sigma_max down to 0 (Karras et al. 2022,
eq. 4). Heun's second-order step corrects every step but the last, as in EDM's
Algorithm 1: the last step lands on the data, where EDM's derivative divides by
sigma = 0, so n steps cost 2n - 1 evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Literal

import torch

OdeSolver = Literal["euler", "heun"]
#: f(x, t) -> dx/dt for a batch at one time.
Derivative = Callable[[torch.Tensor, float], torch.Tensor]


def solver_nfe(solver: OdeSolver, steps: int) -> int:
    """Evaluations of f for ``steps`` steps: n for Euler, 2n - 1 for Heun."""
    if solver == "euler":
        return steps
    if solver == "heun":
        return 2 * steps - 1
    raise ValueError(f"unknown ODE solver {solver!r} (use 'euler' or 'heun')")


@torch.no_grad()
def solve_ode(
    f: Derivative, x: torch.Tensor, times: Sequence[float], *, solver: OdeSolver = "heun"
) -> torch.Tensor:
    """Integrate ``dx/dt = f(x, t)`` from ``times[0]`` to ``times[-1]`` through each time.

    Euler: ``x + h f(x, t)``. Heun: the Euler step, then the trapezoid of the slopes at
    both ends (every step but the last). Times may increase or decrease.
    """
    solver_nfe(solver, 1)  # rejects an unknown solver before any work
    last = len(times) - 2
    for i, (t, t_next) in enumerate(pairwise(times)):
        h = t_next - t
        d = f(x, t)
        x_next = x + h * d
        if solver == "heun" and i < last:
            x_next = x + h * 0.5 * (d + f(x_next, t_next))
        x = x_next
    return x


def uniform_times(steps: int, *, start: float = 0.0, end: float = 1.0) -> list[float]:
    """``steps + 1`` equally spaced times from ``start`` to ``end`` (flow matching's grid)."""
    if steps < 1:
        raise ValueError("an ODE sampler needs at least one step")
    return [start + (end - start) * i / steps for i in range(steps + 1)]


def karras_sigmas(
    steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> list[float]:
    """EDM's noise levels (Karras et al. 2022, eq. 5): ``steps`` sigmas from sigma_max to
    sigma_min, equally spaced in sigma^(1/rho), then 0. One step has sigma_max only."""
    if steps < 1:
        raise ValueError("an ODE sampler needs at least one step")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if steps == 1:
        return [sigma_max, 0.0]
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)] + [0.0]
