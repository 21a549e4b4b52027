"""Training checkpoints: ``<run>/checkpoints/step-NNNNNNNNN.pt``, the last two kept.

A checkpoint holds the model's state, the loop's counters and the RNG state, so a
resumed run continues exactly where the saved one stood. Loaded with
``weights_only=True``: a checkpoint from elsewhere never executes code.

Two formats (``train.checkpoint_format``); loading reads either, whatever the config says:

- ``torch``: everything in the one ``.pt`` file;
- ``safetensors``: the network weights in ``step-NNNNNNNNN.safetensors``
  (:mod:`genbench.storage.weights`), the rest (optimizer and RNG state, counters: not a flat
  set of tensors, so it needs a container) in the ``.pt``, which names its weights file and
  a token that pairs the two. The weights file is written first, so a checkpoint whose
  ``.pt`` exists is complete.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from genbench.contract import Generator
from genbench.storage.weights import (
    WEIGHTS_SUFFIX,
    load_weights,
    merge_tensors,
    save_weights,
    split_tensors,
)
from genbench.utils.device import rng_state
from genbench.utils.errors import CheckpointError, first_line, one_line
from genbench.utils.files import load_torch, save_torch

CHECKPOINT_DIR = "checkpoints"
CKPT_FORMAT = 1
KEEP_CHECKPOINTS = 2


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("step-*.pt"))


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint was saved at, from its name."""
    return int(path.stem.removeprefix("step-"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    paths = checkpoint_paths(run_dir)
    return paths[-1] if paths else None


def save_checkpoint(
    run_dir: Path,
    model: Generator,
    *,
    step: int,
    images_seen: int,
    elapsed: float,
    train_seconds: float,
    fmt: str = "torch",
) -> Path:
    path = run_dir / CHECKPOINT_DIR / f"step-{step:09d}.pt"
    write_checkpoint(
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
        fmt=fmt,
    )
    for old in checkpoint_paths(run_dir)[:-KEEP_CHECKPOINTS]:
        remove_checkpoint(old)
    for orphan in (run_dir / CHECKPOINT_DIR).glob(f"step-*{WEIGHTS_SUFFIX}"):
        if not orphan.with_suffix(".pt").exists():  # a process killed between the two files
            orphan.unlink(missing_ok=True)
    return path


def write_checkpoint(path: Path, state: dict[str, Any], *, fmt: str = "torch") -> Path:
    """Write a checkpoint dict (``state["model"]["modules"]``: the networks' state dicts)
    to ``path`` in format ``fmt`` (see the module docstring)."""
    weights = path.with_suffix(WEIGHTS_SUFFIX)
    if fmt == "torch":
        weights.unlink(missing_ok=True)  # an orphan of a killed writer at this step
        return save_torch(path, state)
    if fmt != "safetensors":
        raise ValueError(f"unknown checkpoint format {fmt!r}")
    tensors, rest = split_tensors(state["model"]["modules"])
    token = secrets.token_hex(8)  # pairs the two files: a stale weights file is refused
    save_weights(weights, tensors, metadata={"checkpoint_id": token, "step": str(state["step"])})
    light = {
        **state,
        "model": {**state["model"], "modules": rest},
        "weights": {"file": weights.name, "checkpoint_id": token},
    }
    return save_torch(path, light)


def read_checkpoint(path: Path) -> Any:
    """A checkpoint dict from either format (weights_only; :func:`load_checkpoint` checks it)."""
    state = load_torch(path)
    ref = state.get("weights") if isinstance(state, dict) else None
    if ref is None:
        return state
    name = ref.get("file", "") if isinstance(ref, dict) else ""
    if Path(name).name != name or not name.endswith(WEIGHTS_SUFFIX):
        raise CheckpointError(f"checkpoint {path} names an invalid weights file {name!r}")
    weights = path.parent / name
    if not weights.is_file():
        raise CheckpointError(
            f"checkpoint {path} needs its weights file {weights}, which is missing"
        )
    modules, meta = load_weights(weights)
    if meta.get("checkpoint_id") != ref.get("checkpoint_id"):
        raise CheckpointError(f"weights file {weights} belongs to another checkpoint than {path}")
    state.pop("weights")
    state["model"]["modules"] = merge_tensors(modules, state["model"].get("modules", {}))
    return state


def checkpoint_files(path: Path) -> list[Path]:
    """The files of one checkpoint: its ``.pt``, and its weights file if it has one."""
    weights = path.with_suffix(WEIGHTS_SUFFIX)
    return [path, weights] if weights.is_file() else [path]


def remove_checkpoint(path: Path) -> None:
    # The .pt first: without it the weights file is an orphan, never half a checkpoint.
    path.unlink(missing_ok=True)
    path.with_suffix(WEIGHTS_SUFFIX).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = read_checkpoint(path)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {one_line(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a genbench checkpoint of format {CKPT_FORMAT}"
        )
    return state


def restore(model: Generator, path: Path) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; returns the whole checkpoint."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: {first_line(exc)}"
        ) from None
    return state
