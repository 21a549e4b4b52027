"""The precision rule: bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from genbench.config import DataConfig, TrainConfig
from genbench.data import load_data
from genbench.runs.steps import environment
from genbench.train.loop import train
from genbench.utils import device as gdev
from genbench.utils.device import autocast_dtype, precision_name, seed_everything

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def native(monkeypatch):
    """Set whether 'this CPU' has native bf16."""

    def set_(value: bool) -> None:
        monkeypatch.setattr(gdev, "cpu_has_native_bf16", lambda: value)

    return set_


@pytest.mark.parametrize(
    ("dev", "has", "precision", "expected"),
    [
        (CPU, False, "auto", "fp32"),
        (CPU, True, "auto", "bf16"),
        (CPU, True, "fp32", "fp32"),
        (CPU, False, "bf16", "bf16"),  # forced, even where it is emulated
        (CUDA, False, "auto", "bf16"),
        (CUDA, True, "fp32", "fp32"),
        (torch.device("mps"), True, "auto", "fp32"),
    ],
)
def test_precision_rule(native, dev, has, precision, expected):
    native(has)
    assert precision_name(dev, precision) == expected
    assert (autocast_dtype(dev, precision) is torch.bfloat16) == (expected == "bf16")


def test_detection_reads_torch_then_cpuinfo(monkeypatch):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    for flags, expected in (
        ({"avx512f", "avx2"}, False),
        ({"avx512f", "avx512_bf16"}, True),
        ({"amx_tile", "amx_bf16"}, True),
        ({"fp", "asimd", "bf16"}, True),  # Arm's Features line
        (set(), False),  # no /proc/cpuinfo (macOS, Windows)
    ):
        monkeypatch.setattr(gdev, "_cpuinfo_flags", lambda f=flags: f)
        gdev.cpu_has_native_bf16.cache_clear()
        assert gdev.cpu_has_native_bf16() is expected
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    gdev.cpu_has_native_bf16.cache_clear()
    assert gdev.cpu_has_native_bf16() is True
    gdev.cpu_has_native_bf16.cache_clear()


def test_cpuinfo_flags_parse_x86_and_arm(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\nFeatures\t: fp bf16\n")
    monkeypatch.setattr(gdev, "Path", lambda p: info if p == "/proc/cpuinfo" else p)
    assert gdev._cpuinfo_flags() == {"fpu", "avx512f", "avx512_bf16", "fp", "bf16"}
    info.unlink()
    assert gdev._cpuinfo_flags() == set()


def _train_loss(precision: str, tmp_path, tag: str) -> float:
    from genbench import registry

    data = load_data(DataConfig(source="digits", resolution=8))
    seed_everything(0)
    cls = registry.load("dcgan")
    model = cls(spec=data.spec, config=cls.Config(), device=CPU, train_data=data.train)
    cfg = TrainConfig(kimg=0.048, batch_size=16, eval_images=0, precision=precision)
    res = train(model, data.train, cfg, seed=0, run_dir=tmp_path / tag)
    return res.last_logs["loss_g"]


def test_training_follows_the_rule_and_records_it(native, tmp_path):
    fp32 = _train_loss("fp32", tmp_path, "fp32")
    bf16 = _train_loss("bf16", tmp_path, "bf16")
    assert fp32 != bf16  # bf16 autocast really ran: the numerics differ
    native(False)
    assert _train_loss("auto", tmp_path, "auto-no") == fp32
    assert environment(CPU, precision="auto")["train_precision"] == "fp32"
    native(True)
    assert _train_loss("auto", tmp_path, "auto-yes") == bf16
    env = environment(CPU, precision="auto")
    assert env["train_precision"] == "bf16" and env["cpu_native_bf16"] is True
    assert environment(CPU, precision="fp32")["train_precision"] == "fp32"
