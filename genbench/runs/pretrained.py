"""Score a model trained elsewhere under the same protocol, without training it.

``genbench run --pretrained MODEL=SOURCE`` (or ``[pretrained]`` in an experiment)
replaces a run's training by loading weights; sampling, scoring and the run
folder are the same as for a trained run, and it lands in the same tables under
the same protocol fingerprint, marked :data:`NOTE`, with budget, training time
and training FLOPs recorded as unknown (``None``), never zero.

Sources:
- a genbench run folder of the same model (or one of its ``checkpoints/step-*.pt``):
  the run's own model config, with this experiment's sampling-only keys, and its
  checkpoint;
- anything else goes to the generator's loader, :meth:`Generator.from_pretrained`
  (diffusers-unet: a diffusers ``save_pretrained`` folder, a pipeline folder, or a
  Hugging Face Hub id when online).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from genbench.config import RunConfig, read_run_config
from genbench.contract import DataSpec, Generator, GeneratorConfig
from genbench.storage.checkpoints import latest_checkpoint, restore
from genbench.utils.errors import ConfigError, GenbenchError, first_line

NOTE = "pretrained: not trained under this protocol"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def has_own_loader(cls: type[Generator]) -> bool:
    """Whether the generator overrides :meth:`Generator.from_pretrained`."""
    return cls.from_pretrained.__func__ is not Generator.from_pretrained.__func__  # type: ignore[attr-defined]


def run_folder(source: str) -> tuple[Path, Path] | None:
    """(run folder, checkpoint) when ``source`` is a genbench run or one of its checkpoints."""
    p = Path(source).expanduser()
    if (
        p.is_file()
        and p.parent.name == "checkpoints"
        and (p.parent.parent / "config.toml").is_file()
    ):
        return p.parent.parent, p
    if p.is_dir() and (p / "config.toml").is_file() and (p / "checkpoints").is_dir():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise ConfigError(f"pretrained source {source}: the run folder holds no checkpoint")
        return p, ckpt
    return None


def check_source(cls: type[Generator], cfg: RunConfig) -> None:
    """Cheap checks before anything trains (exit 2 on a source that cannot work); the
    generator's own loader checks the rest when it loads."""
    assert cfg.pretrained is not None
    found = run_folder(cfg.pretrained)
    if found is not None:
        _check_run_source(read_run_config(found[0] / "config.toml"), cfg, found[0])
    elif not has_own_loader(cls):
        hint = "" if Path(cfg.pretrained).expanduser().exists() else " (no such path)"
        raise ConfigError(
            f"{cfg.model}: pretrained source {cfg.pretrained!r}{hint} is not a genbench run folder, "
            f"and {cfg.model} has no loader of its own (Generator.from_pretrained)"
        )


def _check_run_source(src: RunConfig, cfg: RunConfig, run_dir: Path) -> None:
    if src.model != cfg.model:
        raise ConfigError(f"pretrained run {run_dir.name} is a {src.model} run, not {cfg.model}")
    if (src.data.resolution, src.data.channels) != (cfg.data.resolution, cfg.data.channels):
        raise ConfigError(
            f"pretrained run {run_dir.name} was trained at data.resolution = {src.data.resolution}, "
            f"data.channels = {src.data.channels}; this experiment has {cfg.data.resolution}, {cfg.data.channels}"
        )


def load_pretrained(
    cls: type[Generator],
    cfg: RunConfig,
    *,
    spec: DataSpec,
    config: GeneratorConfig,
    device: torch.device,
    train_data: Any = None,
) -> tuple[Generator, dict[str, Any]]:
    """The model of run ``cfg`` with the weights of ``cfg.pretrained``, and a record of them.

    Raises :class:`ConfigError` (one line) when the source is missing, of another
    model, or does not fit the data.
    """
    source = cfg.pretrained
    assert source is not None
    found = run_folder(source)
    if found is not None:
        model, info = _from_run(
            cls, cfg, *found, spec=spec, config=config, device=device, train_data=train_data
        )
    else:
        check_source(cls, cfg)
        try:
            model = cls.from_pretrained(
                source, spec=spec, config=config, device=device, train_data=train_data
            )
        except (ValueError, OSError) as exc:
            raise ConfigError(
                f"{cfg.model}: pretrained {source}: {(first_line(exc) or type(exc).__name__)}"
            ) from None
        # A loader may describe what it read (format, betas, ...) in ``pretrained_info``.
        info = {
            "source": source,
            "kind": "generator loader",
            **(getattr(model, "pretrained_info", None) or {}),
        }
    info.update(note=NOTE, weights_sha256=_weights_digest(source, info.get("checkpoint")))
    return model, info


def _from_run(
    cls: type[Generator],
    cfg: RunConfig,
    run_dir: Path,
    ckpt: Path,
    *,
    spec: DataSpec,
    config: GeneratorConfig,
    device: torch.device,
    train_data: Any,
) -> tuple[Generator, dict[str, Any]]:
    src = read_run_config(run_dir / "config.toml")
    _check_run_source(src, cfg, run_dir)
    # The network is the source run's; how it samples is this experiment's.
    sampling = {k: v for k, v in config.model_dump().items() if k in cls.sampling_keys}
    try:
        model_cfg = cls.Config.model_validate({**src.generator, **sampling})
    except ValueError as exc:
        raise ConfigError(
            f"pretrained run {run_dir.name}: {(first_line(exc) or type(exc).__name__)}"
        ) from None
    model = cls(spec=spec, config=model_cfg, device=device, train_data=train_data)
    try:
        state = restore(model, ckpt)
    except GenbenchError as exc:
        raise ConfigError(f"pretrained run {run_dir.name}: {exc}") from None
    info = {
        "source": str(run_dir),
        "kind": "genbench run",
        "run_id": run_dir.name,
        "checkpoint": str(ckpt),
        "trained_on": {"experiment": src.experiment, "data": src.data.source, "seed": src.seed},
        "images_seen": state.get("images_seen"),
        "generator": model_cfg.model_dump(mode="json"),
    }
    return model, info


def _weights_digest(source: str, checkpoint: str | None) -> str | None:
    """sha256 over the weight files of a local source (None for a hub id)."""
    p = Path(checkpoint or source).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    else:
        return None
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest() if files else None


def train_record(info: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json["train"]`` of a pretrained run: no budget, time or FLOPs were spent here."""
    return {
        "steps": None,
        "images_seen": None,
        "train_seconds": None,
        "wall_seconds": None,
        "images_per_s": None,
        "flops_per_step": None,
        "flops_total": None,
        "stopped_by": "pretrained",
        "last_logs": {},
        "train_key": None,
        "reused_from": None,
        "pretrained": info,
    }
