"""Speed benchmark of registered generators on this machine (not a test).

For each model: training images/s, the training step's FLOPs (counted with
``torch.utils.flop_counter.FlopCounterMode``) and the achieved GFLOP/s next to a
large matmul's GFLOP/s measured in the same run, and sampling images/s with the
network evaluations per image (NFE) of each sampler a model lists in
``Generator.sampler_variants`` (for the DDPM baselines: the full ancestral chain,
T steps, and their DDIM setting).

Scoring (:mod:`genbench.bench.scoring`): Inception's images/s in fp32 and bf16 side by
side, fp32 as a fraction of the fp32 matmul's GFLOP/s; genbench's path (load PNGs,
Inception features, FID/KID/PR from the features) next to a direct
``torch_fidelity.calculate_metrics`` call on the same two folders with the same extractor,
as images/s and an overhead ratio. With a results folder, the wall time of every run by
phase (train, sample, score).

    genbench bench --models ddpm,cddpm --resolution 32 --channels 1 --results results

Data are random images of the requested shape: speed does not depend on content.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genbench import registry
from genbench.bench.scoring import bench_inception, bench_scoring
from genbench.config import ExperimentConfig, resolve_model_config
from genbench.contract import DataSpec, Generator
from genbench.data import ImageSet
from genbench.report.collect import collect_runs
from genbench.train.loop import measure_flops
from genbench.utils.device import (
    autocast,
    autocast_dtype,
    configure_backend,
    cpu_has_native_bf16,
    precision_name,
    resolve_device,
    synchronize,
    train_channels_last,
)


def matmul_gflops(
    device: torch.device, *, n: int = 2048, repeats: int = 5, precision: str = "auto"
) -> tuple[float, str]:
    """GFLOP/s of an n x n matmul in the dtype ``precision`` computes in on ``device``."""
    dtype = autocast_dtype(device, precision) or torch.float32
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    (a @ b).sum().item()  # warm-up (and library initialisation)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    synchronize(device)
    secs = time.perf_counter() - t0
    del c
    return 2 * n**3 * repeats / secs / 1e9, str(dtype).removeprefix("torch.")


def precisions(device: torch.device) -> list[str]:
    """The precisions to time side by side: fp32, and bf16 where autocast can run it."""
    return ["fp32", "bf16"] if autocast_dtype(device, "bf16") is not None else ["fp32"]


def _fake_data(spec: DataSpec, n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    r = spec.resolution
    images = torch.randint(0, 256, (n, spec.channels, r, r), generator=g, dtype=torch.uint8)
    labels = None
    if spec.condition == "classes":
        labels = torch.randint(0, spec.num_classes, (n,), generator=g)
    elif spec.condition == "attributes":
        labels = (torch.rand(n, spec.num_attributes, generator=g) < 0.3).float()
    return ImageSet(images, labels, torch.arange(n), spec.class_names, spec.attribute_names)


def _spec(
    cls: type[Generator], resolution: int, channels: int, num_classes: int, batch_size: int
) -> DataSpec:
    """The data spec of the random images a model is timed on."""
    class_names = tuple(str(i) for i in range(num_classes))
    return DataSpec(
        resolution=resolution,
        channels=channels,
        condition="classes" if cls.conditional else "none",
        class_names=class_names if cls.conditional else (),
        num_train=max(1024, batch_size),
    )


# params: `genbench bench`'s options for one model, one keyword each
def bench_model(
    name: str,
    *,
    resolution: int = 32,
    channels: int = 1,
    num_classes: int = 10,
    batch_size: int = 64,
    train_steps: int = 10,
    warmup_steps: int = 2,
    sample_n: int = 16,
    device: torch.device | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time one registered generator in fp32 and bf16 (where the device runs bf16 autocast)
    side by side; returns a JSON-serialisable record. ``train_images_per_s`` and
    ``train_gflops_per_s`` are the figures in the precision a run uses by default."""
    device = device or resolve_device("auto")
    cls = registry.load(name)
    exp = ExperimentConfig(models=[name], model={name: overrides} if overrides else {})
    cfg = resolve_model_config(name, cls.Config, exp)
    spec = _spec(cls, resolution, channels, num_classes, batch_size)
    cls.check_spec(spec, cfg)
    data = _fake_data(spec, spec.num_train, seed)
    torch.manual_seed(seed)
    model = cls(spec=spec, config=cfg, device=device, train_data=data)
    channels_last = train_channels_last(device, requested=True)
    if channels_last:
        for m in model.modules().values():
            m.to(memory_format=torch.channels_last)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.arange(step * batch_size, (step + 1) * batch_size) % len(data)
        x, y = data.batch(idx, device)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    x, y = batch(0)
    flops = measure_flops(model, x, y, keep=data)
    precs = precisions(device)
    secs = _time_training(
        model, batch, precs, device=device, train_steps=train_steps, warmup_steps=warmup_steps
    )
    default = precision_name(device, "auto")
    train = {p: _train_speed(secs[p], flops, train_steps, batch_size) for p in precs}
    labels = _sample_labels(cls, num_classes, sample_n, seed)
    return {
        "model": name,
        "parameters": sum(model.num_parameters().values()),
        "batch_size": batch_size,
        "channels_last": channels_last,
        "default_precision": default,
        "train": train,
        "train_images_per_s": train[default]["images_per_s"],
        "train_step_gflop": round(flops / 1e9, 3) if flops else None,
        "train_gflops_per_s": train[default]["gflops_per_s"],
        "sampling": _time_sampling(model, data, precs, n=sample_n, labels=labels, seed=seed),
    }


def _sample_labels(
    cls: type[Generator], num_classes: int, n: int, seed: int
) -> torch.Tensor | None:
    if not cls.conditional:
        return None
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def _train_speed(secs: float, flops: int | None, steps: int, batch_size: int) -> dict[str, Any]:
    return {
        "images_per_s": round(steps * batch_size / secs, 2),
        "gflops_per_s": round(flops * steps / secs / 1e9, 2) if flops else None,
    }


def _time_training(
    model: Generator,
    batch: Any,
    precs: list[str],
    *,
    device: torch.device,
    train_steps: int,
    warmup_steps: int,
) -> dict[str, float]:
    """Seconds inside ``train_step`` per precision, the precisions interleaved step by step
    so a busy machine slows them alike."""
    model.train()
    for s in range(warmup_steps):
        for p in precs:
            with autocast(device, p):
                model.train_step(*batch(s))
    synchronize(device)
    secs = dict.fromkeys(precs, 0.0)
    for s in range(train_steps):
        x, y = batch(warmup_steps + s)
        for p in precs if s % 2 == 0 else precs[::-1]:
            t0 = time.perf_counter()
            with autocast(device, p):
                model.train_step(x, y)
            synchronize(device)
            secs[p] += time.perf_counter() - t0
    return secs


def _time_sampling(
    model: Generator,
    data: ImageSet,
    precs: list[str],
    *,
    n: int,
    labels: torch.Tensor | None,
    seed: int,
) -> list[dict[str, Any]]:
    """Sampling images/s per sampler variant and precision. A model with a ``sample_bf16``
    switch (the diffusion baselines) gets it set to match; any other samples under autocast."""
    cls, cfg, spec, device = type(model), model.config, model.spec, model.device
    state = model.state_dict()
    has_switch = "sample_bf16" in type(cfg).model_fields
    with torch.no_grad():  # warm-up (kernels, allocator) with the model's own sampler
        model.eval().sample(2, labels=labels[:2] if labels is not None else None)
    out = []
    for label, ov in cls.sampler_variants(cfg):
        row: dict[str, Any] = {"variant": label, "seconds": {}, "images_per_s": {}}
        for p in precs:
            extra = {"sample_bf16": p == "bf16"} if has_switch else {}
            # A fresh instance with the variant's config and the trained weights.
            variant_cfg = cls.Config.model_validate({**cfg.model_dump(), **ov, **extra})
            m = cls(spec=spec, config=variant_cfg, device=device, train_data=data)
            m.load_state_dict(state)
            m.eval()
            with torch.no_grad(), autocast(device, p):
                synchronize(device)
                t0 = time.perf_counter()
                m.sample_with_info(n, labels=labels, generator=torch.Generator().manual_seed(seed))
                synchronize(device)
                secs = time.perf_counter() - t0
            proto = m.sampling_protocol()
            row.update(sampler=proto.get("sampler"), nfe=proto.get("nfe"), n=n)
            row["seconds"][p] = round(secs, 3)
            row["images_per_s"][p] = round(n / secs, 3)
        out.append(row)
    return out


def phase_times(results_dir: Path) -> list[dict[str, Any]]:
    """Wall seconds by phase (train, sample, score) of every run folder under ``results_dir``."""
    import pandas as pd

    df = collect_runs(results_dir)
    rows = []
    for _, r in df.iterrows():
        phases = {
            k: float(r[c]) if pd.notna(r.get(c)) else None
            for k, c in (("train", "train_wall_s"), ("sample", "sample_s"), ("score", "score_s"))
        }
        rows.append(
            {
                "run_id": r["run_id"],
                "model": r["model"],
                **phases,
                "total": round(sum(v for v in phases.values() if v is not None), 3),
            }
        )
    return rows


def benchmark(
    models: Sequence[str] = ("ddpm", "cddpm"),
    *,
    device: str = "auto",
    matmul_n: int = 2048,
    score_n: int = 0,
    inception_n: int = 0,
    results_dir: Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Benchmark several registered generators and one matmul on this machine.

    ``kwargs`` go to :func:`bench_model` (resolution, channels, batch_size,
    train_steps, sample_n, ...). ``inception_n`` > 0 adds
    :func:`~genbench.bench.scoring.bench_inception` (fp32 and bf16 Inception on that many
    images, against the fp32 matmul's peak); ``score_n`` > 0 adds :func:`bench_scoring`
    with that many images per side; ``results_dir`` adds :func:`phase_times`. Returns
    ``{"environment", "matmul", "matmul_fp32", "models"[, "inception"][, "scoring"][, "phases"]}``.
    """
    dev = resolve_device(device)
    configure_backend(dev, deterministic=False)
    gflops, dtype = matmul_gflops(dev, n=matmul_n)
    fp32 = (
        (gflops, dtype) if dtype == "float32" else matmul_gflops(dev, n=matmul_n, precision="fp32")
    )
    env = {
        "torch": torch.__version__,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "default_precision": precision_name(dev, "auto"),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    records = [bench_model(m, device=dev, **kwargs) for m in models]
    for r in records:
        if r["train_gflops_per_s"]:
            r["matmul_fraction"] = round(r["train_gflops_per_s"] / gflops, 4)
    out: dict[str, Any] = {
        "environment": env,
        "matmul": {"n": matmul_n, "dtype": dtype, "gflops_per_s": round(gflops, 2)},
        "matmul_fp32": {"n": matmul_n, "dtype": "float32", "gflops_per_s": round(fp32[0], 2)},
        "models": records,
    }
    shape = {"resolution": kwargs.get("resolution", 32), "channels": kwargs.get("channels", 1)}
    if inception_n > 0:
        out["inception"] = bench_inception(
            n=inception_n, device=dev, fp32_peak_gflops=round(fp32[0], 2), **shape
        )
    if score_n > 0:
        out["scoring"] = bench_scoring(n=score_n, device=dev, **shape)
    if results_dir is not None:
        out["phases"] = phase_times(results_dir)
    return out
