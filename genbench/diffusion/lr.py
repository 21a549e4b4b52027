"""Learning-rate schedules as pure functions of the step.

The step counter is all the state a schedule has, so checkpointing the counter
checkpoints the schedule, and a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from typing import Literal

LRSchedule = Literal["constant", "cosine", "onecycle"]


def _cos(start: float, end: float, frac: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def lr_factor(
    step: int,
    *,
    kind: LRSchedule,
    total_steps: int | None,
    warmup_steps: int = 0,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """Multiplier of the base learning rate at 0-based ``step``.

    ``constant``: 1 after a linear warmup. ``cosine``: linear warmup, then a
    cosine decay to 0 at ``total_steps``. ``onecycle``: torch's OneCycleLR
    shape (cosine up from 1/div_factor over ``pct_start`` of the steps, then
    cosine down to 1/(div_factor·final_div_factor)). Steps past the end keep
    the final value.
    """
    if kind == "onecycle":
        if total_steps is None:
            raise ValueError("the one-cycle schedule needs the total number of steps")
        up = max(1, round(pct_start * total_steps))
        if step < up:
            return _cos(1 / div_factor, 1.0, step / up)
        return _cos(
            1.0, 1 / (div_factor * final_div_factor), (step - up) / max(1, total_steps - 1 - up)
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs the total number of steps")
        return _cos(1.0, 0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    raise ValueError(f"unknown learning-rate schedule {kind!r}")
