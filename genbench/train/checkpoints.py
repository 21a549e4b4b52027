"""Training checkpoints: ``<run>/checkpoints/step-NNNNNNNNN.pt``, the last two kept.

A checkpoint holds the model's state, the loop's counters and the RNG state, so a
resumed run continues exactly where the saved one stood. Loaded with
``weights_only=True``: a checkpoint from elsewhere never executes code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genbench.contract import Generator
from genbench.device import rng_state
from genbench.errors import CheckpointError, first_line, one_line
from genbench.io import load_torch, save_torch

CHECKPOINT_DIR = "checkpoints"
CKPT_FORMAT = 1
KEEP_CHECKPOINTS = 2


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("step-*.pt"))


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
) -> Path:
    path = run_dir / CHECKPOINT_DIR / f"step-{step:09d}.pt"
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
