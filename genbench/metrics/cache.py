"""Where scoring keeps what it may reuse: reference features, converted weights,
the class-consistency classifier. Never generated-sample features."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

_FILE_SHA: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    """``$GENBENCH_CACHE`` if set, else ``~/.cache/genbench``."""
    env = os.environ.get("GENBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genbench"


def sha256_file(path: Path | str) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_SHA[key] = h.hexdigest()
    return _FILE_SHA[key]


def sha256_tensor(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (for keys on image sets)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
