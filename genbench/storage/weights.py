"""Network weights as safetensors: the format the diffusers / Hugging Face ecosystem exchanges
(``train.checkpoint_format = "safetensors"``; see :mod:`genbench.storage.checkpoints`).

One file holds every module of a generator, keyed ``<module>.<state-dict key>``
(``G.main.0.weight``), so ``safetensors.torch.load_file`` plus a prefix filter gives any
one network's state dict. safetensors stores raw tensors and a JSON header only: loading
it cannot execute code. Non-tensor state-dict entries (a module's ``get_extra_state``)
cannot go in it; :func:`split_tensors` returns them for the caller to keep elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from genbench.utils.errors import CheckpointError, one_line
from genbench.utils.files import atomic_write

WEIGHTS_FORMAT = "genbench-weights-1"
WEIGHTS_SUFFIX = ".safetensors"


def split_tensors(
    modules: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
    """``{module: state_dict}`` -> (its tensors, everything else), both keyed the same way."""
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    rest: dict[str, dict[str, Any]] = {}
    for name, sd in modules.items():
        tensors[name] = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        other = {k: v for k, v in sd.items() if not isinstance(v, torch.Tensor)}
        if other:
            rest[name] = other
    return tensors, rest


def merge_tensors(
    tensors: Mapping[str, Mapping[str, torch.Tensor]], rest: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`split_tensors`."""
    out = {name: dict(sd) for name, sd in tensors.items()}
    for name, other in rest.items():
        out.setdefault(name, {}).update(other)
    return out


def save_weights(
    path: Path, modules: Mapping[str, Mapping[str, torch.Tensor]], *, metadata: Mapping[str, str]
) -> Path:
    """Write ``{module: {key: tensor}}`` to ``path`` atomically, with string ``metadata``."""
    from safetensors.torch import save_file

    flat: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, sd in modules.items():
        for k, t in sd.items():
            t = t.detach().cpu().contiguous()
            # safetensors refuses tensors that share memory (tied weights, views of one
            # buffer); those get their own copy, and load_state_dict re-ties nothing anyway.
            ptr = t.untyped_storage().data_ptr()
            if ptr in storages and t.numel() > 0:
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
            flat[f"{name}.{k}"] = t
    meta = {
        "format": WEIGHTS_FORMAT,
        "modules": json.dumps({name: list(sd) for name, sd in modules.items()}),
        **metadata,
    }
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=meta))


def load_weights(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """``(modules, metadata)`` from a file :func:`save_weights` wrote (tensors on the CPU)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            f"{path} is a safetensors file: pip install safetensors to load it"
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != WEIGHTS_FORMAT:
                raise CheckpointError(f"{path} is not a genbench weights file ({WEIGHTS_FORMAT})")
            layout = json.loads(meta["modules"])
            modules = {
                name: {k: f.get_tensor(f"{name}.{k}") for k in keys}
                for name, keys in layout.items()
            }
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"weights file {path} cannot be loaded: {one_line(exc)}") from None
    return modules, meta
