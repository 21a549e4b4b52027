"""The training loop every generator goes through.

It never names a model: data order, budget (kimg), wall-clock limit, seeds,
checkpoints, logs, FLOP counting and divergence checks are the same for all.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from genbench.config import TrainConfig
from genbench.contract import Generator
from genbench.data import ImageSet
from genbench.device import autocast, rng_state, set_rng_state
from genbench.distributed import (
    SINGLE,
    DistInfo,
    any_flag,
    average_gradients,
    barrier,
    broadcast_state,
)
from genbench.errors import CheckpointError, ConfigError, TrainingDiverged
from genbench.io import load_torch, save_torch, write_text

CKPT_FORMAT = 1
KEEP_CHECKPOINTS = 2


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


def total_steps(cfg: TrainConfig) -> int:
    return max(1, math.ceil(cfg.kimg * 1000 / cfg.batch_size))


def checkpoint_interval(cfg: TrainConfig) -> int:
    kimg = cfg.checkpoint_kimg if cfg.checkpoint_kimg is not None else cfg.kimg / 10
    return max(1, round(kimg * 1000 / cfg.batch_size))


def eval_interval(cfg: TrainConfig, n_train: int) -> int:
    kimg = cfg.eval_every_kimg if cfg.eval_every_kimg is not None else n_train / 1000  # one epoch
    return max(1, round(kimg * 1000 / cfg.batch_size))


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


# -- checkpoints ----------------------------------------------------------------
def checkpoint_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step-*.pt"))


def save_checkpoint(
    run_dir: Path,
    model: Generator,
    *,
    step: int,
    images_seen: int,
    elapsed: float,
    train_seconds: float,
) -> Path:
    path = run_dir / "checkpoints" / f"step-{step:09d}.pt"
    save_torch(
        path,
        {
            "format": CKPT_FORMAT,
            "model": model.state_dict(),
            "step": step,
            "images_seen": images_seen,
            "elapsed": elapsed,
            "train_seconds": train_seconds,
            "rng": rng_state(),
        },
    )
    for old in checkpoint_paths(run_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = load_torch(path)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a genbench checkpoint of format {CKPT_FORMAT}"
        )
    return state


def restore(model: Generator, path: Path) -> dict[str, Any]:
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: {str(exc).splitlines()[0]}"
        ) from None
    return state


def latest_checkpoint(run_dir: Path) -> Path | None:
    paths = checkpoint_paths(run_dir)
    return paths[-1] if paths else None


# -- the loop -------------------------------------------------------------------
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
    stop_after: int | None = None,  # for tests: stop as if killed after this many steps
) -> TrainResult:
    device = model.device
    steps = total_steps(cfg)
    every = checkpoint_interval(cfg)
    eval_every = eval_interval(cfg, len(data))
    do_eval = holdout is not None and len(holdout) > 0 and cfg.eval_images > 0
    order = BatchOrder(len(data), cfg.batch_size, seed)
    main = dist_info.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train_log.jsonl"
    channels_last = device.type == "cuda" and cfg.channels_last
    if channels_last:
        for m in model.modules().values():
            m.to(memory_format=torch.channels_last)
    if dist_info.enabled and cfg.batch_size % dist_info.world:
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} must divide evenly over {dist_info.world} processes "
            "(the global batch stays the same whatever the process count)"
        )

    step, images_seen, elapsed0, train_s = 0, 0, 0.0, 0.0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = restore(model, ckpt)
        step, images_seen = state["step"], state["images_seen"]
        elapsed0, train_s = state["elapsed"], state["train_seconds"]
        set_rng_state(state["rng"])
        if main:
            _truncate_log(log_path, step)
    elif main:
        log_path.unlink(missing_ok=True)

    def local(idx: torch.Tensor) -> torch.Tensor:
        # Each rank takes its share of the global batch.
        return idx[dist_info.rank :: dist_info.world]

    hooks = []
    if dist_info.enabled:
        if not model.optimizers():
            raise ConfigError(
                f"{type(model).__name__} declares no optimizers(); it cannot train data-parallel"
            )
        broadcast_state(dist_info, model.modules())
        hooks = average_gradients(dist_info, model.optimizers())
        # Different noise on every rank (same noise would waste the extra batch), reproducibly.
        torch.manual_seed((seed * 1_000 + dist_info.rank) * 1_000_003 + step)

    flops = None
    if step < steps:
        x, y = data.batch(local(order.indices(step)), device)
        flops = measure_flops(model, _fmt(x, channels_last), y, keep=data)
        if flops is not None:
            flops *= dist_info.world  # FLOPs of one global step

    if cfg.compile and device.type == "cuda":
        for m in model.modules().values():
            m.compile()  # in place: the model keeps calling its own attribute
    model.train()
    t_start = time.perf_counter()
    window: dict[str, list[float]] = {}
    window_t, window_imgs = 0.0, 0
    stopped_by, last = "budget", {}
    try:
        while step < steps:
            out_of_time = (
                cfg.max_minutes is not None
                and elapsed0 + time.perf_counter() - t_start >= cfg.max_minutes * 60
            )
            if dist_info.enabled and cfg.max_minutes is not None:
                (out_of_time,) = any_flag(
                    dist_info, out_of_time
                )  # every rank stops at the same step
            if out_of_time:
                stopped_by = "wall-clock"
                break
            x, y = data.batch(local(order.indices(step)), device)
            x = _fmt(x, channels_last)
            t0 = time.perf_counter()
            with autocast(device, cfg.precision):
                logs = model.train_step(x, y)
            if device.type == "cuda" and (step + 1) % cfg.log_every == 0:
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            train_s += dt
            window_t += dt
            step += 1
            images_seen += cfg.batch_size
            window_imgs += cfg.batch_size
            if dist_info.enabled:
                broadcast_state(dist_info, model.modules(), buffers_only=True)
            bad = {k: float(v) for k, v in logs.items() if not math.isfinite(float(v))}
            if dist_info.enabled:
                (any_bad,) = any_flag(dist_info, bool(bad))
                bad = bad or ({"loss": float("nan")} if any_bad else {})
            if bad:
                k, v = next(iter(bad.items()))
                raise TrainingDiverged(
                    f"loss '{k}' became {v} at step {step} ({images_seen / 1000:.2f} kimg); the run is stopped"
                )
            for k, v in logs.items():
                window.setdefault(k, []).append(float(v))
            evaluated = {}
            if do_eval and (step % eval_every == 0 or step == steps):
                assert holdout is not None
                state = rng_state()  # evaluation must not shift the training noise stream
                evaluated = evaluate(model, holdout, cfg)
                set_rng_state(state)
            if step % cfg.log_every == 0 or step == steps or evaluated:
                last = {k: sum(v) / len(v) for k, v in window.items()} if window else dict(last)
                last.update(evaluated)
                if main:
                    _append_log(
                        log_path,
                        {
                            "step": step,
                            "kimg": images_seen / 1000,
                            "elapsed_s": round(elapsed0 + time.perf_counter() - t_start, 3),
                            "images_per_s": round(window_imgs / max(window_t, 1e-9), 2),
                            **last,
                        },
                    )
                window, window_t, window_imgs = {}, 0.0, 0
            if on_step is not None:
                on_step(step, steps, logs)
            if on_snapshot is not None and snapshot_steps and step in snapshot_steps:
                # Snapshots sample in eval mode; training resumes as if nothing happened.
                state = rng_state()
                model.eval()
                on_snapshot(step, images_seen, train_s)
                model.train()
                set_rng_state(state)
            if step % every == 0 and step < steps and main:
                save_checkpoint(
                    run_dir,
                    model,
                    step=step,
                    images_seen=images_seen,
                    elapsed=elapsed0 + time.perf_counter() - t_start,
                    train_seconds=train_s,
                )
            if stop_after is not None and step >= stop_after:
                wall = elapsed0 + time.perf_counter() - t_start
                return _result(step, images_seen, train_s, wall, flops, "interrupted", last)
    finally:
        for h in hooks:
            h.remove()

    wall = elapsed0 + time.perf_counter() - t_start
    if main:
        save_checkpoint(
            run_dir, model, step=step, images_seen=images_seen, elapsed=wall, train_seconds=train_s
        )
    barrier(dist_info)
    if not last and log_path.exists():
        last = _last_logged(log_path)
    return _result(step, images_seen, train_s, wall, flops, stopped_by, last)


def _result(
    step: int,
    images_seen: int,
    train_s: float,
    wall: float,
    flops: int | None,
    stopped_by: str,
    last: dict[str, float],
) -> TrainResult:
    return TrainResult(
        steps=step,
        images_seen=images_seen,
        train_seconds=round(train_s, 3),
        wall_seconds=round(wall, 3),
        images_per_s=round(images_seen / train_s, 2) if train_s > 0 else 0.0,
        flops_per_step=flops,
        flops_total=flops * step if flops is not None else None,
        stopped_by=stopped_by,
        last_logs=last,
    )


def _fmt(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """Log records; a torn last line (a killed process) is dropped."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate_log(path: Path, step: int) -> None:
    # Lines written after the checkpoint we resume from would be logged twice.
    kept = [r for r in read_log(path) if r.get("step", 0) <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _last_logged(path: Path) -> dict[str, float]:
    recs = read_log(path)
    if not recs:
        return {}
    skip = {"step", "kimg", "elapsed_s", "images_per_s"}
    return {k: v for k, v in recs[-1].items() if k not in skip}
