"""Experiment trackers: copies of a run's numbers for TensorBoard and Weights & Biases.

The run folder's own files (``train_log.jsonl``, ``snapshots.jsonl``, ``metrics.json``,
``samples/``) stay the source of truth: they are always written, and the report reads only
them. A tracker listed in ``train.loggers`` gets

- the training scalars (``train/<key>``, at the training step),
- snapshot scores (``snapshot/<metric>``) and a grid of the snapshot's samples,
- the final scores (``final/<metric>``) with the protocol and its fingerprint,
- a grid of the final sample set (``samples``).

A tracker that cannot start (package missing, no W&B login, unwritable folder) or that fails
later is one warning, and the run goes on without it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from genbench.storage.folder import TENSORBOARD, read_wandb_id, write_wandb_id
from genbench.storage.images import tile_tensor
from genbench.utils.errors import one_line

TRACKERS = ("jsonl", "tensorboard", "wandb")
GRID_IMAGES = 64


class Tracker:
    """One destination for a run's numbers. Subclasses implement every method."""

    name = "tracker"

    def log_scalars(self, values: Mapping[str, float], *, step: int) -> None:
        raise NotImplementedError

    def log_image(self, tag: str, image: torch.Tensor, *, step: int) -> None:
        """``image``: uint8, C x H x W (one or three channels)."""
        raise NotImplementedError

    def log_protocol(self, protocol: Mapping[str, Any], *, step: int) -> None:
        """The protocol the final scores were measured under (with its ``fingerprint``)."""
        raise NotImplementedError

    def close(self, *, failed: bool = False) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Event files in ``RUN_DIR/tensorboard/`` (``tensorboard --logdir results/`` shows every run)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # purge_step: events a killed process wrote after the checkpoint (steps > resume_step)
        # are dropped on reading, so a resumed run shows one curve, not two overlapping ones.
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD), purge_step=purge)

    def log_scalars(self, values: Mapping[str, float], *, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=step)

    def log_image(self, tag: str, image: torch.Tensor, *, step: int) -> None:
        self.writer.add_image(tag, image, global_step=step, dataformats="CHW")

    def log_protocol(self, protocol: Mapping[str, Any], *, step: int) -> None:
        fp = protocol.get("fingerprint", "?")
        body = json.dumps(protocol, indent=2, sort_keys=True, default=str)
        # TensorBoard renders text as markdown: indent four spaces for a code block.
        text = f"fingerprint `{fp}`\n\n" + "\n".join("    " + line for line in body.splitlines())
        self.writer.add_text("final/protocol", text, global_step=step)

    def close(self, *, failed: bool = False) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run named after the genbench run, grouped by experiment.

    Project, entity and mode come from W&B's own settings (``WANDB_PROJECT``, default
    ``genbench``; ``WANDB_ENTITY``; ``WANDB_MODE=offline`` writes under ``RUN_DIR/wandb/`` for a
    later ``wandb sync``). Every value carries the training ``step`` as its x axis, so a resumed
    run that re-logs steps after its checkpoint does not break W&B's monotonic internal step.
    """

    name = "wandb"

    def __init__(
        self,
        run_dir: Path,
        *,
        run_id: str,
        group: str,
        tags: Iterable[str],
        config: Mapping[str, Any],
        resume: bool,
    ) -> None:
        import wandb

        saved = read_wandb_id(run_dir) if resume else {}
        wb_id = saved.get("id") or f"{run_id[:48]}-{secrets.token_hex(4)}"
        project = os.environ.get("WANDB_PROJECT") or "genbench"
        self.run = wandb.init(
            project=project,
            id=wb_id,
            name=run_id,
            group=group,
            tags=list(tags),
            config=dict(config),
            dir=str(run_dir),
            resume="allow",
            # console="off": genbench's progress display owns the terminal.
            settings=wandb.Settings(console="off", silent=True),
        )
        self._wandb = wandb
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        write_wandb_id(
            run_dir,
            {"id": wb_id, "project": project, "mode": os.environ.get("WANDB_MODE", "online")},
        )

    def log_scalars(self, values: Mapping[str, float], *, step: int) -> None:
        self.run.log({"step": step, **values})

    def log_image(self, tag: str, image: torch.Tensor, *, step: int) -> None:
        arr = image.permute(1, 2, 0).cpu().numpy()
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        self.run.log({"step": step, tag: self._wandb.Image(arr)})

    def log_protocol(self, protocol: Mapping[str, Any], *, step: int) -> None:
        # In the config, runs can be filtered and grouped by fingerprint in the W&B UI.
        self.run.config.update({"protocol": dict(protocol)}, allow_val_change=True)
        self.run.summary["final/fingerprint"] = protocol.get("fingerprint")

    def close(self, *, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Trackers:
    """Fans a run's events out to its trackers; a failing tracker is warned about once and dropped."""

    def __init__(self, trackers: list[Tracker], *, warn: Callable[[str], None]) -> None:
        self.trackers = list(trackers)
        self._warn = warn

    def __bool__(self) -> bool:
        return bool(self.trackers)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as exc:
                self.trackers.remove(t)
                why = one_line(exc).rstrip(".")
                self._warn(
                    f"{t.name} logging stopped: {why} (the run goes on; its JSONL files have "
                    "every number)"
                )
                with contextlib.suppress(Exception):  # already broken; the warning said so
                    t.close(failed=True)

    def training(self, record: Mapping[str, Any]) -> None:
        """One ``train_log.jsonl`` record."""
        step = int(record["step"])
        values = {f"train/{k}": v for k, v in loggable_scores(record).items() if k != "step"}
        if values:
            self._each(lambda t: t.log_scalars(values, step=step))

    def snapshot(
        self, *, step: int, scores: Mapping[str, Any], images: torch.Tensor | None = None
    ) -> None:
        values = {f"snapshot/{k}": v for k, v in loggable_scores(scores).items()}
        if values:
            self._each(lambda t: t.log_scalars(values, step=step))
        if images is not None:
            grid = sample_grid(images)
            self._each(lambda t: t.log_image("snapshot/samples", grid, step=step))

    def final(
        self,
        *,
        step: int,
        scores: Mapping[str, Any] | None = None,
        protocol: Mapping[str, Any] | None = None,
        images: torch.Tensor | None = None,
    ) -> None:
        if images is not None:
            grid = sample_grid(images)
            self._each(lambda t: t.log_image("samples", grid, step=step))
        values = {f"final/{k}": v for k, v in loggable_scores(scores or {}).items()}
        if values:
            self._each(lambda t: t.log_scalars(values, step=step))
        if protocol:
            self._each(lambda t: t.log_protocol(protocol, step=step))

    def close(self, *, failed: bool = False) -> None:
        self._each(lambda t: t.close(failed=failed))
        self.trackers = []


def open_trackers(
    names: Iterable[str],
    *,
    run_dir: Path,
    run_id: str,
    group: str,
    tags: Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
    resume_step: int | None = None,
    warn: Callable[[str], None],
) -> Trackers:
    """Start the trackers ``names`` asks for (``jsonl`` is the run folder itself: nothing to start).

    ``resume_step``: the checkpoint step a resumed run continues from (None for a fresh start).
    """
    started: list[Tracker] = []
    for name in names:
        try:
            if name == "tensorboard":
                started.append(TensorBoardTracker(run_dir, resume_step=resume_step))
            elif name == "wandb":
                started.append(
                    WandbTracker(
                        run_dir,
                        run_id=run_id,
                        group=group,
                        tags=tags,
                        config=config or {},
                        resume=resume_step is not None,
                    )
                )
            elif name != "jsonl":
                raise ValueError(f"unknown tracker {name!r} (known: {', '.join(TRACKERS)})")
        except ImportError as exc:
            warn(
                f"{name} logging is off: {exc.name or name} is not installed "
                f"(pip install 'genbench[{name}]'); the run goes on"
            )
        except Exception as exc:
            why = one_line(exc).rstrip(".")
            warn(f"{name} logging is off: it failed to start: {why}; the run goes on")
    return Trackers(started, warn=warn)


def loggable_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """What a tracker can log, finite numbers only: ``{"kid": {"mean": m, "std": s}}`` ->
    ``{"kid": m, "kid_std": s}``; None (a metric that could not be computed) and non-numbers
    are left out (unlike :func:`genbench.report.collect.flatten_scores`, which keeps None as
    a table's missing value)."""
    out: dict[str, float] = {}
    for k, v in scores.items():
        if isinstance(v, Mapping):
            for sub, x in loggable_scores(v).items():
                out[k if sub == "mean" else f"{k}_{sub}"] = x
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def sample_grid(images: torch.Tensor, *, n: int = GRID_IMAGES) -> torch.Tensor:
    """The first ``n`` of a uint8 N x C x H x W sample set as one uint8 C x H x W grid."""
    images = images[:n]
    return tile_tensor(images, nrow=max(1, math.ceil(math.sqrt(len(images)))))
