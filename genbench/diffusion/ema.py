"""Exponential moving average of a network's weights (seed 001: decay 0.995 from step 2000)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of ``model`` whose weights follow the model's.

    Before ``start_step`` updates the copy equals the model; from then on each
    update is ``ema = decay * ema + (1 - decay) * weights``. Buffers are copied.
    The copy is always in eval mode and holds no gradients.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.995, start_step: int = 2000) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.start_step = decay, start_step
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_p = list(self.module.parameters())
        p = [q.detach() for q in model.parameters()]
        if self.updates < self.start_step:
            torch._foreach_copy_(ema_p, p)
        else:
            torch._foreach_lerp_(ema_p, p, 1.0 - self.decay)
        for eb, b in zip(self.module.buffers(), model.buffers(), strict=True):
            eb.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
