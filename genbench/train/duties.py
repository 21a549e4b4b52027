"""What the training loop does between steps, when due: evaluate on held-out
images, log, report progress, take snapshots, save checkpoints.

Each duty is an object with ``after_step(state)``, called after every step in
list order; it decides from the :class:`LoopState` whether it is due. A new
periodic job (a tracker logger, say) is one more duty passed to ``train``; it
runs after the built-in ones and sees the step's logged record in
``state.logged``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from genbench.config import TrainConfig
from genbench.contract import Generator
from genbench.data import ImageSet
from genbench.storage.checkpoints import save_checkpoint
from genbench.utils.device import autocast, rng_state, set_rng_state
from genbench.utils.files import append_jsonl


@dataclass
class LoopState:
    """Where training stands after a step; duties read it, the log duty fills ``last``."""

    step: int
    total: int  # steps in the budget
    images_seen: int = 0
    train_seconds: float = 0.0  # time inside train steps, over all attempts
    elapsed_before: float = 0.0  # wall seconds of the attempts before a resume
    started: float = field(default_factory=time.perf_counter)  # this attempt's start
    logs: dict[str, float] = field(default_factory=dict)  # this step's train_step outputs
    step_seconds: float = 0.0  # this step's time inside train_step
    evaluated: dict[str, float] = field(default_factory=dict)  # held-out metrics at this step
    logged: dict[str, Any] | None = None  # the record logged at this step, if any
    last: dict[str, float] = field(default_factory=dict)  # the latest logged means

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def begin_step(self) -> None:
        self.evaluated, self.logged = {}, None


class Duty(Protocol):
    def after_step(self, state: LoopState) -> None: ...


@torch.no_grad()
def evaluate(model: Generator, holdout: ImageSet, cfg: TrainConfig) -> dict[str, float]:
    """Batch-weighted means of ``model.evaluate`` over a fixed held-out subset."""
    n = min(cfg.eval_images, len(holdout))
    sums: dict[str, float] = {}
    model.eval()
    try:
        for start in range(0, n, cfg.batch_size):
            idx = torch.arange(start, min(start + cfg.batch_size, n))
            x, y = holdout.batch(idx, model.device)
            with autocast(model.device, cfg.precision):
                logs = model.evaluate(x, y)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
    finally:
        model.train()
    return {k: v / n for k, v in sums.items()} if n else {}


class Evaluate:
    """Held-out metrics every ``every`` steps and at the last step."""

    def __init__(self, model: Generator, holdout: ImageSet, cfg: TrainConfig, *, every: int):
        self.model, self.holdout, self.cfg, self.every = model, holdout, cfg, every

    def after_step(self, state: LoopState) -> None:
        if state.step % self.every == 0 or state.step == state.total:
            rng = rng_state()  # evaluation must not shift the training noise stream
            state.evaluated = evaluate(self.model, self.holdout, self.cfg)
            set_rng_state(rng)


class Log:
    """Means of the step logs over each interval (and images/s), written as JSON
    lines to ``path`` (None: computed for the result, not written, as on ranks > 0)."""

    def __init__(self, path: Path | None, *, every: int, batch_size: int) -> None:
        self.path, self.every, self.batch_size = path, every, batch_size
        self._reset()

    def _reset(self) -> None:
        self.window: dict[str, list[float]] = {}
        self.seconds, self.images = 0.0, 0

    def after_step(self, state: LoopState) -> None:
        for k, v in state.logs.items():
            self.window.setdefault(k, []).append(float(v))
        self.seconds += state.step_seconds
        self.images += self.batch_size
        if not (state.step % self.every == 0 or state.step == state.total or state.evaluated):
            return
        if self.window:
            state.last = {k: sum(v) / len(v) for k, v in self.window.items()}
        state.last = {**state.last, **state.evaluated}
        state.logged = {
            "step": state.step,
            "kimg": state.images_seen / 1000,
            "elapsed_s": round(state.elapsed(), 3),
            "images_per_s": round(self.images / max(self.seconds, 1e-9), 2),
            **state.last,
        }
        if self.path is not None:
            append_jsonl(self.path, state.logged)
        self._reset()


class Progress:
    """Calls ``on_step(step, total, logs)`` after every step (a progress bar)."""

    def __init__(self, on_step: Callable[[int, int, dict[str, float]], None]) -> None:
        self.on_step = on_step

    def after_step(self, state: LoopState) -> None:
        self.on_step(state.step, state.total, state.logs)


class Snapshot:
    """``take(step, images_seen, train_seconds)`` at the listed steps and once each time
    the time inside train steps passes one of ``seconds``, in eval mode; training resumes
    as if nothing happened (same mode, same noise stream)."""

    def __init__(
        self,
        model: Generator,
        steps: list[int],
        take: Callable[[int, int, float], None],
        *,
        seconds: list[float] | None = None,
    ) -> None:
        self.model, self.steps, self.take = model, set(steps), take
        self.marks = sorted(seconds or [])

    def after_step(self, state: LoopState) -> None:
        passed = [m for m in self.marks if m <= state.train_seconds]
        self.marks = self.marks[len(passed) :]
        if state.step not in self.steps and not passed:
            return
        rng = rng_state()
        self.model.eval()
        self.take(state.step, state.images_seen, state.train_seconds)
        self.model.train()
        set_rng_state(rng)


class Checkpoint:
    """A checkpoint every ``every`` steps, or every ``every_seconds`` of training time;
    the loop itself saves the final one."""

    def __init__(
        self,
        run_dir: Path,
        model: Generator,
        *,
        every: int | None,
        every_seconds: float | None = None,
        fmt: str = "torch",
    ) -> None:
        self.run_dir, self.model, self.every, self.fmt = run_dir, model, every, fmt
        self.every_seconds, self._next = every_seconds, every_seconds or 0.0

    def _due(self, state: LoopState) -> bool:
        if self.every is not None:
            return state.step % self.every == 0
        if self.every_seconds is None or state.train_seconds < self._next:
            return False
        while self._next <= state.train_seconds:  # one save, however many marks a step passed
            self._next += self.every_seconds
        return True

    def after_step(self, state: LoopState) -> None:
        if self._due(state) and state.step < state.total:
            save_checkpoint(
                self.run_dir,
                self.model,
                step=state.step,
                images_seen=state.images_seen,
                elapsed=state.elapsed(),
                train_seconds=state.train_seconds,
                fmt=self.fmt,
            )


class Track:
    """Hands each logged record to ``send`` (experiment trackers: TensorBoard, W&B);
    the JSON line itself is the :class:`Log` duty's."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send

    def after_step(self, state: LoopState) -> None:
        if state.logged is not None:
            self.send(state.logged)
