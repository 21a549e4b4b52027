"""Data-parallel training under torchrun, without touching the Generator contract.

A generator's ``train_step`` calls its own modules and optimizers, so genbench does
not wrap them in DistributedDataParallel (the model would have to call the wrapper).
Instead every parameter gets a hook that averages its gradient over the ranks as
soon as it is accumulated, before the model's optimizer steps; buffers (BatchNorm
statistics) are broadcast from rank 0 after each step. Weights start equal (same
seed, then a broadcast), see equal averaged gradients, and so stay equal.
NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world=world, local_rank=local)


def shutdown(info: DistInfo, *, wait: bool = True) -> None:
    """Leave the process group, after every rank got here if ``wait`` (a no-op without one)."""
    if info.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_flag(info: DistInfo, *flags: bool) -> list[bool]:
    """Element-wise OR of flags over ranks (e.g. "diverged", "out of time")."""
    if not info.enabled:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def broadcast_state(
    info: DistInfo, modules: dict[str, nn.Module], *, buffers_only: bool = False
) -> None:
    if not info.enabled:
        return
    for m in modules.values():
        tensors = list(m.buffers()) if buffers_only else [*m.parameters(), *m.buffers()]
        for t in tensors:
            dist.broadcast(t.data, src=0)


def average_gradients(info: DistInfo, optimizers: dict[str, torch.optim.Optimizer]) -> list[Any]:
    """Make every optimizer average its gradients over the ranks just before it steps.

    A pre-step hook rather than per-parameter hooks: a parameter that got no gradient on
    one rank (a branch taken only sometimes, such as a null label) cannot deadlock the
    all-reduce, and all gradients of a step travel as one flat tensor.
    """
    if not info.enabled:
        return []
    world = info.world

    def pre_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for g in opt.param_groups for p in g["params"]]
        has = torch.tensor([float(p.grad is not None) for p in params], device=_comm_device())
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        live = [p for p, h in zip(params, has.tolist(), strict=True) if h]
        for p in live:
            if p.grad is None:  # another rank has a gradient here: contribute zeros
                p.grad = torch.zeros_like(p)
        if not live:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in live])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for p in live:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    return [opt.register_step_pre_hook(pre_step) for opt in optimizers.values()]
