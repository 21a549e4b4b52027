"""Device choice, precision and seeding. CUDA-only settings are applied only
when the device is CUDA, so a CPU run never touches a CUDA-only path."""

from __future__ import annotations

import contextlib
import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbench.utils.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was asked for, but CUDA is not available here (use --device cpu)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} was asked for, but MPS is not available here")
    return dev


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm).

    Without it, bf16 autocast on the CPU emulates bf16 and runs slower than fp32.
    Asks torch first, then /proc/cpuinfo; anything else (another OS, an old
    torch) answers False, so the fallback is always fp32.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except (RuntimeError, AttributeError):
            pass
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 / Arm
            flags.update(value.split())
    return flags


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` ("auto", "bf16" or "fp32") on ``device``; None = fp32.

    "auto" is bf16 on CUDA and on a CPU with native bf16 (:func:`cpu_has_native_bf16`),
    fp32 elsewhere; "bf16" forces bf16 on CUDA and CPU; "fp32" forces fp32.
    """
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if precision == "auto" and device.type == "cpu" and not cpu_has_native_bf16():
        return None
    return torch.bfloat16


def precision_name(device: torch.device, precision: str) -> str:
    """What :func:`autocast` actually computes in: "bf16" or "fp32" (for the run's record)."""
    return "bf16" if autocast_dtype(device, precision) is not None else "fp32"


def train_channels_last(device: torch.device, *, requested: bool) -> bool:
    """Whether the training loop converts every network and batch to channels_last
    (``train.channels_last``): on CUDA only. On the CPU it is a per-network matter (measured
    with bf16 autocast: the denoiser's UNet gains, the diffusion UNet loses ~20%), so a
    network that gains converts itself there (see the denoiser)."""
    return requested and device.type == "cuda"


def inference_channels_last(device: torch.device) -> bool:
    """channels_last for fp32 convolutional scoring networks (Inception, the class-consistency
    classifier): faster on CUDA and on x86 CPUs (oneDNN), with the same features to ~1e-6."""
    return device.type in ("cuda", "cpu")


def precision_record(device: torch.device, precision: str) -> dict[str, Any]:
    """For a run's environment: the precision training computes in, and whether the CPU has native bf16."""
    return {
        "train_precision": precision_name(device, precision),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere. For timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def configure_backend(device: torch.device, *, deterministic: bool) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """All global RNG states, as types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    # random.setstate wants tuples; a round trip may hand back lists.
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
