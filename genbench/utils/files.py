"""File reading and writing: atomic writes (a reader never sees a half-written
file), JSON, JSON lines, torch files and PNG images."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """JSON-lines records; a torn or foreign line is skipped (a killed writer leaves one)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def write_jsonl(path: Path | str, records: list[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_jsonl(path: Path | str, record: dict[str, Any]) -> None:
    # A plain append, not atomic: a killed writer leaves at most a torn last line,
    # which read_jsonl skips.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def save_torch(path: Path | str, obj: Any) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def load_torch(path: Path | str, *, map_location: Any = "cpu") -> Any:
    # weights_only: a checkpoint from elsewhere must never execute code.
    return torch.load(path, map_location=map_location, weights_only=True)


def save_png(img: torch.Tensor, path: Path) -> None:
    """uint8 C x H x W -> PNG (grayscale as mode L)."""
    arr = img.numpy()
    Image.fromarray(arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))).save(
        path, format="PNG"
    )


def write_files(folder: Path, files: Mapping[str, Any]) -> None:
    """Files made in memory (the metric units' ``UnitResult.files``) written into ``folder``,
    each atomically: a uint8 C x H x W tensor as PNG, anything else as JSON."""
    for name, content in files.items():
        if isinstance(content, torch.Tensor):
            atomic_write(folder / name, lambda p, img=content: save_png(img, p))
        else:
            write_json(folder / name, content)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
