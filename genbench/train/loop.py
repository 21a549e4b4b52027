"""The training loop every generator goes through.

It never names a model: data order, budget (kimg), wall-clock limit, seeds,
FLOP counting and divergence checks are the same for all. The step body is
``_step``; what happens between steps (evaluation, logs, progress, snapshots,
checkpoints) are duties in :mod:`genbench.train.duties`; checkpoint files are
:mod:`genbench.storage.checkpoints`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from genbench.config import TrainConfig
from genbench.contract import Generator
from genbench.data import ImageSet
from genbench.storage.checkpoints import latest_checkpoint, restore, save_checkpoint
from genbench.storage.folder import TRAIN_LOG, last_logged, truncate_log
from genbench.train.duties import Checkpoint, Duty, Evaluate, Log, LoopState, Progress, Snapshot
from genbench.utils.device import autocast, rng_state, set_rng_state, train_channels_last
from genbench.utils.distributed import (
    SINGLE,
    DistInfo,
    any_flag,
    average_gradients,
    barrier,
    broadcast_state,
)
from genbench.utils.errors import ConfigError, TrainingDiverged


@dataclass
class TrainResult:
    steps: int
    images_seen: int
    train_seconds: float  # time inside train steps
    wall_seconds: float  # including data, logging and checkpoints
    images_per_s: float
    flops_per_step: int | None
    flops_total: int | None
    stopped_by: str  # "budget" or "wall-clock"
    last_logs: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BatchOrder:
    """Stateless data order: the batch at step s depends only on (seed, s), so a
    resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = {k: v for k, v in self._cache.items() if k == epoch - 1}
            self._cache[epoch] = torch.randperm(self.n, generator=g)
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        # A batch may straddle two epochs: every batch is full and no image is dropped.
        start, end = step * self.batch_size, (step + 1) * self.batch_size
        parts, pos = [], start
        while pos < end:
            epoch, within = divmod(pos, self.n)
            take = min(self.n - within, end - pos)
            parts.append(self._perm(epoch)[within : within + take])
            pos += take
        return torch.cat(parts)


#: Steps of a budget not known in advance (seconds): the loop stops on the clock.
OPEN_ENDED = 1 << 62


def total_steps(cfg: TrainConfig, flops_per_step: int | None = None) -> int:
    """Steps in the budget: from images seen, or from the FLOPs one step costs."""
    if cfg.budget == "seconds":
        return OPEN_ENDED
    if cfg.budget == "tflop":
        if flops_per_step is None:
            return OPEN_ENDED  # until the first step has been counted
        return max(1, math.ceil(cfg.tflop * 1e12 / flops_per_step))
    return max(1, math.ceil(cfg.kimg * 1000 / cfg.batch_size))


def checkpoint_interval(cfg: TrainConfig, *, total: int = OPEN_ENDED) -> int | None:
    """Steps between checkpoints: ``checkpoint_kimg``, else a tenth of the budget in
    steps; None for a seconds budget, which checkpoints by the clock instead."""
    if cfg.checkpoint_kimg is not None:
        return max(1, round(cfg.checkpoint_kimg * 1000 / cfg.batch_size))
    if cfg.budget == "seconds":
        return None
    if cfg.budget == "tflop" and total < OPEN_ENDED:
        return max(1, round(total / 10))
    return max(1, round(cfg.kimg * 100 / cfg.batch_size))


def eval_interval(cfg: TrainConfig, n_train: int) -> int:
    kimg = cfg.eval_every_kimg if cfg.eval_every_kimg is not None else n_train / 1000  # one epoch
    return max(1, round(kimg * 1000 / cfg.batch_size))


def measure_flops(
    model: Generator, images: torch.Tensor, labels: torch.Tensor | None, *, keep: Any
) -> int | None:
    """FLOPs of one train step, counted on a throw-away copy so training is untouched."""
    state = rng_state()
    try:
        twin = copy.deepcopy(model, memo={id(keep): keep})
        with FlopCounterMode(display=False) as counter:
            twin.train_step(images, labels)
        return int(counter.get_total_flops())
    except (
        Exception
    ):  # counting is best-effort: an op the counter cannot trace must not stop training
        return None
    finally:
        set_rng_state(state)


# -- the loop -------------------------------------------------------------------
# params: the loop's inputs and its optional hooks (on_step, snapshots, duties)
def train(
    model: Generator,
    data: ImageSet,
    cfg: TrainConfig,
    *,
    seed: int,
    run_dir: Path,
    holdout: ImageSet | None = None,
    resume: bool = False,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    dist_info: DistInfo = SINGLE,
    snapshot_steps: list[int] | None = None,
    on_snapshot: Callable[[int, int, float], None] | None = None,
    duties: Sequence[Duty] = (),
    snapshot_fractions: Sequence[float] = (),
) -> TrainResult:
    """Train ``model`` on ``data`` for ``cfg``'s budget, writing checkpoints and the
    training log under ``run_dir``; ``resume`` continues from its last checkpoint.

    ``on_step`` is called after every step, ``on_snapshot`` at ``snapshot_steps`` and
    at ``snapshot_fractions`` of the budget (in its unit: images, FLOPs or seconds);
    ``duties`` (see :mod:`genbench.train.duties`) run after the built-in ones.
    """
    device, main = model.device, dist_info.is_main
    _check_data_parallel(model, cfg, dist_info)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    channels_last = _use_channels_last(model, cfg)
    state = _start(model, cfg, run_dir, resume=resume, main=main)
    order = BatchOrder(len(data), cfg.batch_size, seed)
    hooks = _join_ranks(model, dist_info, seed=seed, step=state.step)
    flops = _global_step_flops(model, data, order, state, dist_info, channels_last)
    state.total = _budget_steps(cfg, flops, state)
    if cfg.compile and device.type == "cuda":
        for m in model.modules().values():
            m.compile()  # in place, after counting FLOPs: the model calls its own attribute

    every_step = [
        *_standard_duties(
            model,
            cfg,
            run_dir,
            n_train=len(data),
            total=state.total,
            holdout=holdout,
            on_step=on_step,
            snapshots=_snapshot_points(cfg, state, snapshot_steps, snapshot_fractions),
            on_snapshot=on_snapshot,
            main=main,
        ),
        *duties,
    ]

    model.train()
    state.started = time.perf_counter()
    stopped_by = "budget"
    try:
        while state.step < state.total:
            if _out_of_time(cfg, state, dist_info):
                stopped_by = "wall-clock"
                break
            _step(model, data, order, cfg, state, dist_info=dist_info, channels_last=channels_last)
            if cfg.budget == "seconds":
                state.total = _seconds_total(cfg, state, dist_info)
            for duty in every_step:
                duty.after_step(state)
    finally:
        for h in hooks:
            h.remove()

    return _finish(model, cfg, run_dir, state, flops, stopped_by, dist_info=dist_info)


def _finish(
    model: Generator,
    cfg: TrainConfig,
    run_dir: Path,
    state: LoopState,
    flops: int | None,
    stopped_by: str,
    *,
    dist_info: DistInfo,
) -> TrainResult:
    """The final checkpoint (for sampling and resume) and the result."""
    wall = state.elapsed()
    if dist_info.is_main:
        save_checkpoint(
            run_dir,
            model,
            step=state.step,
            images_seen=state.images_seen,
            elapsed=wall,
            train_seconds=state.train_seconds,
            fmt=cfg.checkpoint_format,
        )
    barrier(dist_info)
    if not state.last and (run_dir / TRAIN_LOG).exists():
        state.last = last_logged(run_dir / TRAIN_LOG)  # a resumed run that had nothing left
    return _result(state, wall, flops, stopped_by)


def _use_channels_last(model: Generator, cfg: TrainConfig) -> bool:
    # CUDA only: on the CPU it is the network's own call (see train_channels_last).
    if not train_channels_last(model.device, requested=cfg.channels_last):
        return False
    for m in model.modules().values():
        m.to(memory_format=torch.channels_last)
    return True


# params: train's arguments that the built-in duties read, passed on
def _standard_duties(
    model: Generator,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    n_train: int,
    total: int,
    holdout: ImageSet | None,
    on_step: Callable[[int, int, dict[str, float]], None] | None,
    snapshots: tuple[set[int], list[float]],
    on_snapshot: Callable[[int, int, float], None] | None,
    main: bool,
) -> list[Duty]:
    """Evaluate, log, progress, snapshots, checkpoints: in this order, since the log
    carries the evaluation and a checkpoint comes after everything else of its step."""
    out: list[Duty] = []
    if holdout is not None and len(holdout) > 0 and cfg.eval_images > 0:
        out.append(Evaluate(model, holdout, cfg, every=eval_interval(cfg, n_train)))
    log_path = run_dir / TRAIN_LOG if main else None  # ranks > 0 compute, rank 0 writes
    out.append(Log(log_path, every=cfg.log_every, batch_size=cfg.batch_size))
    if on_step is not None:
        out.append(Progress(on_step))
    steps, marks = snapshots
    if on_snapshot is not None and (steps or marks):
        out.append(Snapshot(model, sorted(steps), on_snapshot, seconds=marks))
    if main:
        every = checkpoint_interval(cfg, total=total)
        seconds = cfg.seconds / 10 if every is None else None  # a tenth of a seconds budget
        out.append(
            Checkpoint(
                run_dir, model, every=every, every_seconds=seconds, fmt=cfg.checkpoint_format
            )
        )
    return out


def _budget_steps(cfg: TrainConfig, flops: int | None, state: LoopState) -> int:
    if cfg.budget == "tflop" and flops is None:
        raise ConfigError(
            "train.budget = 'tflop' but this model's training FLOPs could not be counted "
            "(torch.utils.flop_counter); use budget = 'kimg' or 'seconds'"
        )
    if cfg.budget == "seconds":
        return _seconds_total(cfg, state, SINGLE) if state.step else OPEN_ENDED
    return total_steps(cfg, flops)


def _seconds_total(cfg: TrainConfig, state: LoopState, dist_info: DistInfo) -> int:
    """A seconds budget: done once the time inside train steps reaches it (every rank
    together); until then, the steps it will take at the pace so far (for progress)."""
    done = state.train_seconds >= cfg.seconds
    if dist_info.enabled:
        (done,) = any_flag(dist_info, done)
    if done:
        return state.step
    pace = state.train_seconds / state.step if state.step else 0.0
    return max(state.step + 1, math.ceil(cfg.seconds / pace)) if pace > 0 else OPEN_ENDED


def _snapshot_points(
    cfg: TrainConfig,
    state: LoopState,
    steps: list[int] | None,
    fractions: Sequence[float],
) -> tuple[set[int], list[float]]:
    """Snapshot steps, and for a seconds budget the train_seconds marks still ahead."""
    at = set(steps or ())
    if cfg.budget == "seconds":
        marks = [f * cfg.seconds for f in fractions if f * cfg.seconds > state.train_seconds]
        return at, marks
    at |= {max(1, round(f * state.total)) for f in fractions}
    return at, []


def _global_step_flops(
    model: Generator,
    data: ImageSet,
    order: BatchOrder,
    state: LoopState,
    dist_info: DistInfo,
    channels_last: bool,
) -> int | None:
    if state.step >= state.total:
        return None
    x, y = data.batch(_local(order.indices(state.step), dist_info), model.device)
    flops = measure_flops(model, _fmt(x, channels_last), y, keep=data)
    return flops * dist_info.world if flops is not None else None


def _step(
    model: Generator,
    data: ImageSet,
    order: BatchOrder,
    cfg: TrainConfig,
    state: LoopState,
    *,
    dist_info: DistInfo,
    channels_last: bool,
) -> None:
    """One optimisation step on the global batch; a non-finite loss on any rank stops the run."""
    device = model.device
    state.begin_step()
    x, y = data.batch(_local(order.indices(state.step), dist_info), device)
    x = _fmt(x, channels_last)
    t0 = time.perf_counter()
    with autocast(device, cfg.precision):
        logs = model.train_step(x, y)
    if device.type == "cuda" and (state.step + 1) % cfg.log_every == 0:
        torch.cuda.synchronize(device)
    state.step_seconds = time.perf_counter() - t0
    state.train_seconds += state.step_seconds
    state.step += 1
    state.images_seen += cfg.batch_size
    state.logs = logs
    if dist_info.enabled:
        broadcast_state(dist_info, model.modules(), buffers_only=True)
    bad = {k: float(v) for k, v in logs.items() if not math.isfinite(float(v))}
    if dist_info.enabled:
        (any_bad,) = any_flag(dist_info, bool(bad))
        bad = bad or ({"loss": float("nan")} if any_bad else {})
    if bad:
        k, v = next(iter(bad.items()))
        raise TrainingDiverged(
            f"loss '{k}' became {v} at step {state.step} ({state.images_seen / 1000:.2f} kimg); "
            "the run is stopped"
        )


def _check_data_parallel(model: Generator, cfg: TrainConfig, dist_info: DistInfo) -> None:
    if not dist_info.enabled:
        return
    if cfg.batch_size % dist_info.world:
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} must divide evenly over {dist_info.world} processes "
            "(the global batch stays the same whatever the process count)"
        )
    if not model.optimizers():
        raise ConfigError(
            f"{type(model).__name__} declares no optimizers(); it cannot train data-parallel"
        )


def _start(
    model: Generator, cfg: TrainConfig, run_dir: Path, *, resume: bool, main: bool
) -> LoopState:
    """A fresh state, or the last checkpoint's when resuming (weights, counters, RNG)."""
    state = LoopState(step=0, total=total_steps(cfg))
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        saved = restore(model, ckpt)
        state.step, state.images_seen = saved["step"], saved["images_seen"]
        state.elapsed_before, state.train_seconds = saved["elapsed"], saved["train_seconds"]
        set_rng_state(saved["rng"])
        if main:
            truncate_log(run_dir / TRAIN_LOG, state.step)
    elif main:
        (run_dir / TRAIN_LOG).unlink(missing_ok=True)
    return state


def _join_ranks(model: Generator, dist_info: DistInfo, *, seed: int, step: int) -> list[Any]:
    """Under data parallelism: the same start weights everywhere, gradient averaging
    hooks (returned, to remove at the end) and a different noise stream per rank."""
    if not dist_info.enabled:
        return []
    broadcast_state(dist_info, model.modules())
    hooks = average_gradients(dist_info, model.optimizers())
    # Different noise on every rank (same noise would waste the extra batch), reproducibly.
    torch.manual_seed((seed * 1_000 + dist_info.rank) * 1_000_003 + step)
    return hooks


def _out_of_time(cfg: TrainConfig, state: LoopState, dist_info: DistInfo) -> bool:
    if cfg.max_minutes is None:
        return False
    out = state.elapsed() >= cfg.max_minutes * 60
    if dist_info.enabled:
        (out,) = any_flag(dist_info, out)  # every rank stops at the same step
    return out


def _local(idx: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    # Each rank takes its share of the global batch.
    return idx[dist_info.rank :: dist_info.world]


def _result(state: LoopState, wall: float, flops: int | None, stopped_by: str) -> TrainResult:
    return TrainResult(
        steps=state.step,
        images_seen=state.images_seen,
        train_seconds=round(state.train_seconds, 3),
        wall_seconds=round(wall, 3),
        images_per_s=round(state.images_seen / state.train_seconds, 2)
        if state.train_seconds > 0
        else 0.0,
        flops_per_step=flops,
        flops_total=flops * state.step if flops is not None else None,
        stopped_by=stopped_by,
        last_logs=state.last,
    )


def _fmt(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
