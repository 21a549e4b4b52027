"""The run folder: where each file of a run lives, its status, its logs, its lock,
and finding a finished run whose training another run can reuse.

Layout of ``<results>/<run_id>/``::

    .lock             held while one process works on the run
    status.json       running (with its phase) | done | failed | interrupted | skipped (why)
    config.toml       the resolved run config, written before training starts
    split.json        the data split the run trained on
    train_log.jsonl   one record per log interval: losses, held-out metrics, speed
    snapshots.jsonl   scores of small sample sets taken during training
    snapshots/        step-NNNNNNNNN/: each snapshot's images (PNGs and manifest.json)
    checkpoints/      step-NNNNNNNNN.pt (and .safetensors weights), the last two kept
    samples/          the fixed sample set and its manifest.json
    metrics.json      everything measured; written last, so its presence means scored
    copies.json/.png  the copy audit (metrics.memorization): matches and matched pairs
    bootstrap.json    the bootstrap's replicates (metrics.bootstrap)
    grids/            grids drawn by ``genbench sample``
    tensorboard/      TensorBoard event files (``train.loggers``)
    wandb/            W&B's own run folders; wandb.json: the W&B run id ``--resume`` continues

Only this module writes into a run folder (``tests/test_run_folder_writes.py``): the
run's steps, the real-data row, the metric units' files and ``genbench sample``'s grids
all go through :class:`RunFolder`. genbench/train/ writes the training log, snapshots
and checkpoints into the folder it is handed; TensorBoard and W&B write their own
folders (``tensorboard/``, ``wandb/``) at the paths named here.

The lock is a plain OS lock on ``.lock`` (``flock`` on POSIX, ``msvcrt.locking``
on Windows): the kernel drops it when the holder dies, even by SIGKILL, so a
killed run never leaves a stale lock in the way of ``--resume``. The lock file
itself is left in place; only the lock on it matters. (Not the ``filelock``
package: its recent releases add unlink-and-retry and soft-lock fallbacks that
make a single non-blocking attempt harder to reason about.)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genbench.storage.checkpoints import CHECKPOINT_DIR, checkpoint_files, latest_checkpoint
from genbench.utils.files import (
    atomic_write,
    read_json,
    read_jsonl,
    save_png,
    write_files,
    write_json,
    write_jsonl,
    write_text,
)
from genbench.utils.naming import digest

if TYPE_CHECKING:
    import torch

    from genbench.config import RunConfig
    from genbench.contract import Generator

LOCK_NAME = ".lock"
STATUS = "status.json"
CONFIG = "config.toml"
SPLIT = "split.json"
TRAIN_LOG = "train_log.jsonl"
SNAPSHOTS = "snapshots.jsonl"
SNAPSHOT_DIR = "snapshots"
SAMPLES = "samples"
METRICS = "metrics.json"
GRIDS = "grids"
TENSORBOARD = "tensorboard"
WANDB_ID = "wandb.json"
MANIFEST = "manifest.json"  # in samples/

#: In the results folder itself: the copy descriptor's seed, shared by its runs.
AUDIT_SEED = ".audit-seed.json"

#: Keys of a train-log record that are bookkeeping, not losses or metrics.
LOG_BOOKKEEPING = ("step", "kimg", "elapsed_s", "images_per_s")


def audit_seed(results_dir: Path) -> int:
    """The copy descriptor's seed for every run scored in a results folder: drawn the
    first time the folder is scored and kept in it (``.audit-seed.json``), so the
    descriptor trains once per folder and no plugin can rebuild it from the training
    images alone. Created exclusively: concurrent first runs agree on one seed."""
    import secrets

    path = results_dir / AUDIT_SEED
    for _ in range(2):
        try:
            return int(read_json(path)["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        results_dir.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x") as f:
                f.write(f'{{"seed": {secrets.randbelow(2**31)}}}\n')
        except FileExistsError:
            time.sleep(0.2)  # another process is writing it
    return int(read_json(path)["seed"])


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the paths of its files (see the module docstring)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def split(self) -> Path:
        return self.path / SPLIT

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def snapshots(self) -> Path:
        return self.path / SNAPSHOTS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def grids(self) -> Path:
        return self.path / GRIDS

    # -- status ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status record; {} when there is none or it is unreadable."""
        return read_status(self.path)

    def is_done(self) -> bool:
        return self.status().get("status") == "done"

    def set_status(self, status: str, **extra: Any) -> None:
        set_status(self.path, status, **extra)

    # -- writing -------------------------------------------------------------------
    def start(self, *, resume: bool) -> None:
        """A fresh start clears an earlier attempt's outputs (no old checkpoint may leak in);
        --resume keeps them. The folder exists afterwards."""
        if not resume and self.status():
            self.clear_outputs()
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config_toml: str, split: dict[str, Any]) -> None:
        """config.toml (the resolved run config) and split.json, before training starts."""
        write_text(self.config, config_toml)
        write_json(self.split, split)

    def write_samples(self, images: torch.Tensor, manifest: dict[str, Any]) -> None:
        """samples/: the PNGs and the manifest of how they were drawn."""
        write_sample_set(self.samples, images, manifest)

    def write_grid(self, name: str, grid: torch.Tensor) -> Path:
        """grids/NAME: a grid drawn by ``genbench sample`` (uint8 C x H x W, already tiled)."""
        return atomic_write(self.grids / name, lambda p: save_png(grid, p))

    def write_files(self, files: Mapping[str, Any]) -> None:
        """Files the metric units made in memory (copies.json, copies.png, bootstrap.json)."""
        write_files(self.path, files)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json, then status done: a folder marked done is complete."""
        write_json(self.metrics, metrics)
        self.set_status("done")

    def clear_outputs(self) -> None:
        """A fresh start: an interrupted attempt's checkpoints and samples must not leak in,
        nor its TensorBoard events; W&B starts a new run (unsynced runs in wandb/ are kept)."""
        for sub in (self.checkpoints, self.samples, self.path / TENSORBOARD):
            shutil.rmtree(sub, ignore_errors=True)
        (self.path / WANDB_ID).unlink(missing_ok=True)


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json`` of a run folder; {} when there is none or it is unreadable."""
    p = run_dir / STATUS
    try:
        return read_json(p) if p.exists() else {}
    except ValueError:
        return {}


def set_status(run_dir: Path, status: str, **extra: Any) -> None:
    """Write ``status.json``: the status, the time, and any extra fields (phase, error)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run_dir / STATUS, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    )


# -- the sample set ----------------------------------------------------------------
def write_sample_set(out_dir: Path, images: torch.Tensor, manifest: dict[str, Any]) -> None:
    """N uint8 PNGs named by index and their manifest.json, written into a temp folder and
    renamed: a sample set is either complete or absent."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, img in enumerate(images):
        save_png(img, tmp / f"{i:06d}.png")
    write_json(tmp / MANIFEST, manifest)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def read_sample_set(folder: Path) -> tuple[list[Path], dict[str, Any]]:
    """The PNG files of a sample set, in index order, and its manifest ({} if none)."""
    files = sorted(p for p in folder.glob("*.png"))
    manifest = read_json(folder / MANIFEST) if (folder / MANIFEST).exists() else {}
    return files, manifest


# -- W&B -------------------------------------------------------------------------
def read_wandb_id(run_dir: Path) -> dict[str, Any]:
    """wandb.json: the W&B run id ``--resume`` continues ({} if none or unreadable)."""
    try:
        return read_json(run_dir / WANDB_ID)
    except (OSError, ValueError):
        return {}


def write_wandb_id(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(run_dir / WANDB_ID, record)


# -- logs ------------------------------------------------------------------------
def truncate_log(path: Path, step: int) -> None:
    """Keep records up to ``step``: lines written after the checkpoint a run resumes
    from would otherwise be logged twice."""
    write_jsonl(path, [r for r in read_jsonl(path) if r.get("step", 0) <= step])


def last_logged(path: Path) -> dict[str, float]:
    """The losses and metrics of the last log record (bookkeeping keys dropped)."""
    recs = read_jsonl(path)
    if not recs:
        return {}
    return {k: v for k, v in recs[-1].items() if k not in LOG_BOOKKEEPING}


def snapshot_folder(run_dir: Path, step: int) -> Path:
    return run_dir / SNAPSHOT_DIR / f"step-{step:09d}"


def put_snapshot(path: Path, record: dict[str, Any]) -> None:
    """Add a snapshot record; a resumed run re-takes snapshots after its checkpoint,
    so records from this step on are replaced."""
    kept = [r for r in read_jsonl(path) if r.get("step", 0) < record["step"]]
    write_jsonl(path, [*kept, record])


# -- lock ------------------------------------------------------------------------
try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True


class RunLock:
    """A held run-folder lock; ``release()`` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lock_run(run_dir: Path) -> RunLock | None:
    """The run folder's lock, held; or None when another process (or another
    ``try_lock_run`` in this one) holds it.

    Does not wait: a second process skips a locked run rather than queueing
    behind a training job that may take hours.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_lock(fd):
        os.close(fd)
        return None
    return RunLock(fd, path)


# -- reusing a trained run ---------------------------------------------------------
def train_key(cfg: RunConfig, cls: type[Generator]) -> str:
    """Digest of everything that shapes training: the run config without its sampling,
    scoring and the generator's sampling-only keys."""
    d = cfg.identity()
    for k in ("sample", "metrics"):
        d.pop(k)
    d["generator"] = {k: v for k, v in d["generator"].items() if k not in cls.sampling_keys}
    return digest(d, 16)


def find_trained_twin(run_dir: Path, key: str) -> tuple[Path, dict[str, Any]] | None:
    """A finished run in the same results folder whose training this run can reuse:
    its folder and the ``train`` section of its metrics."""
    for other in sorted(run_dir.parent.iterdir()):
        if other == run_dir or not (other / METRICS).is_file():
            continue
        try:
            m = read_json(other / METRICS)
        except ValueError:
            continue
        same = m.get("train", {}).get("train_key") == key
        if same and read_status(other).get("status") == "done" and latest_checkpoint(other):
            return other, m["train"]
    return None


def copy_training(src: Path, dst: Path) -> Path:
    """Copy a finished run's last checkpoint and training log; returns the checkpoint copy."""
    ckpt = latest_checkpoint(src)
    assert ckpt is not None
    (dst / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    for f in checkpoint_files(ckpt):  # a safetensors checkpoint is two files
        shutil.copy2(f, dst / CHECKPOINT_DIR / f.name)
    if (src / TRAIN_LOG).is_file():
        shutil.copy2(src / TRAIN_LOG, dst / TRAIN_LOG)
    return dst / CHECKPOINT_DIR / ckpt.name
