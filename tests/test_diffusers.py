"""diffusers schedulers as samplers, the diffusers-unet generator (genbench[diffusers])."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("diffusers")

from genbench import registry
from genbench.config import DataConfig
from genbench.contract import DataSpec
from genbench.data import load_data
from genbench.diffusion import (
    DIFFUSERS_SAMPLERS,
    NoiseSchedule,
    make_scheduler,
    run_sampler,
)
from genbench.utils.errors import MissingExtra
from genbench_baselines.cddpm import CDDPM, CDDPMConfig
from genbench_baselines.ddpm import DDPM, DDPMConfig

CPU = torch.device("cpu")
SPEC = DataSpec(resolution=8, channels=1)
CLASSES = DataSpec(
    resolution=8, channels=1, condition="classes", class_names=tuple("abc"), num_train=10
)
TINY = {
    "timesteps": 40,
    "base_channels": 8,
    "channel_mults": [1, 2],
    "attn_resolutions": [],
    "num_heads": 1,
    "sample_steps": 4,
    "use_ema": False,
}


def tiny_ddpm(cls=DDPM, config_cls=DDPMConfig, spec=SPEC, **over) -> DDPM:
    torch.manual_seed(0)
    model = cls(spec=spec, config=config_cls(**{**TINY, **over}), device=CPU)
    # Zero-initialised output layers would predict eps = 0 everywhere: give the net a real output.
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(("eta", "clip"), [(0.0, None), (1.0, 1.0)])
def test_diffusers_ddim_equals_genbench_ddim(eta, clip):
    """Same weights, same noise, same time indices: diffusers' DDIMScheduler and genbench's
    DDIM give the same samples (respaced 40 -> 8 steps, with and without x_0 clipping)."""
    model = tiny_ddpm()
    eps = lambda x, t: model.predict(model.net, x, t, None)  # noqa: E731
    sch = make_scheduler("diffusers-ddim", model.schedule)
    sch.set_timesteps(8)
    ts = [int(t) for t in sch.timesteps]
    assert ts == [39, 34, 29, 24, 19, 14, 9, 4]
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = {"clip": clip, "eta": eta}
    ours = run_sampler(
        eps,
        x,
        model.schedule,
        sampler="ddim",
        timesteps=ts,
        generator=torch.Generator().manual_seed(2),
        **kw,
    )
    theirs = run_sampler(
        eps,
        x,
        model.schedule,
        sampler="diffusers-ddim",
        steps=8,
        generator=torch.Generator().manual_seed(2),
        **kw,
    )
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours - x).abs().mean() > 0.1  # it did denoise something
    if eta == 0.0:
        # All T steps: both visit T-1 ... 0 with no explicit list.
        full = run_sampler(eps, x, model.schedule, sampler="ddim", steps=40, clip=1.0)
        dfull = run_sampler(eps, x, model.schedule, sampler="diffusers-ddim", steps=40, clip=1.0)
        # 40 fp32 steps accumulate rounding (with diffusers 0.42.1 the two differ by just over 1e-4
        # here); a wrong step or schedule moves samples by 1e-2 or more.
        assert (full - dfull).abs().max() < 5e-4, (full - dfull).abs().max()


def test_diffusers_schedulers_use_the_genbench_betas():
    for kind in ("linear", "cosine"):
        s = NoiseSchedule(kind=kind, timesteps=100)
        sch = make_scheduler("dpmpp", s)
        assert torch.allclose(sch.alphas_cumprod.double(), s.alphas_cumprod, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", *DIFFUSERS_SAMPLERS])
def test_every_sampler_samples_and_records_its_real_nfe(sampler):
    model = tiny_ddpm(CDDPM, CDDPMConfig, spec=CLASSES, sampler=sampler)
    calls = []
    inner = model._forward

    def counting(net, x, t, labels, drop=None):
        calls.append(len(x))
        return inner(net, x, t, labels, drop)

    model._forward = counting
    labels = torch.tensor([0, 1])
    out = model.sample(2, labels=labels, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    proto = model.sampling_protocol()
    # Guidance batches both passes into one call of 2N images: NFE per image = 2 x calls.
    assert proto["nfe"] == 2 * len(calls) and all(n == 4 for n in calls)
    expected_steps = 4 * 2 - 1 if sampler == "heun" else 4  # Heun: 2 per step but the last
    assert proto["nfe"] == 2 * expected_steps and proto["steps"] == 4
    assert proto["sampler"] == sampler and proto["guidance_scale"] == 3.0
    if sampler in DIFFUSERS_SAMPLERS:
        assert (
            proto["scheduler"].startswith("diffusers.") and proto["timestep_spacing"] == "trailing"
        )


def test_sampler_names_are_validated():
    with pytest.raises(ValueError, match="sampler"):
        DDPMConfig(sampler="dpm-solver-typo")


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(source="digits", resolution=16))


UNET = {
    "block_out_channels": [8, 16],
    "attn_resolutions": [8],
    "attention_head_dim": 4,
    "norm_num_groups": 4,
    "timesteps": 50,
    "sample_steps": 3,
}


def test_diffusers_unet_is_class_conditional_with_a_null_class(digits):
    cls = registry.load("diffusers-unet")
    cfg = cls.Config(**UNET, sampler="unipc")
    cls.check_spec(digits.spec, cfg)
    torch.manual_seed(0)
    model = cls(spec=digits.spec, config=cfg, device=CPU)
    from diffusers import UNet2DModel

    assert isinstance(model.net, UNet2DModel)
    assert model.net.config.num_class_embeds == 11 and model.net.config.class_embed_type is None
    assert [b for b in model.net.config.down_block_types] == ["DownBlock2D", "AttnDownBlock2D"]
    x, y = digits.train.batch(torch.arange(16))
    logs = model.train_step(x, y)
    assert logs["loss"] == logs["loss"] and model.passes_per_step() == 2
    model.eval()
    # Label dropout / guidance: a dropped row is exactly the null class.
    xt, t = torch.randn(2, 1, 16, 16), torch.full((2,), 10)
    lab = torch.tensor([3, 3])
    null = model.call_network(model.net, xt, t, lab, torch.tensor([True, True]))
    direct = model.net(xt, t, class_labels=torch.tensor([10, 10])).sample
    assert torch.allclose(null, direct)
    # A one-hot mixture is that class; mixtures run through the same embedding table.
    onehot = torch.nn.functional.one_hot(lab, 10).float()
    assert torch.allclose(
        model.call_network(model.net, xt, t, onehot, None),
        model.call_network(model.net, xt, t, lab, None),
        atol=1e-5,
    )
    out = model.sample(2, labels=lab, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 16, 16)
    assert model.sampling_protocol()["nfe"] == 6


def test_diffusers_unet_on_unconditional_data(digits):
    cls = registry.load("diffusers-unet")
    spec = DataSpec(resolution=16, channels=1)
    model = cls(spec=spec, config=cls.Config(**UNET), device=CPU)
    assert model.net.class_embedding is None and model.passes_per_step() == 1
    x, _ = digits.train.batch(torch.arange(8))
    assert model.train_step(x, None)["loss"] > 0
    proto = model.sampling_protocol()
    assert proto["nfe"] == 3 and "guidance_scale" not in proto


def test_diffusers_unet_rejects_attributes():
    cls = registry.load("diffusers-unet")
    spec = DataSpec(resolution=16, channels=3, condition="attributes", attribute_names=("a", "b"))
    with pytest.raises(ValueError, match="attribute"):
        cls.check_spec(spec, cls.Config())


def test_without_diffusers_the_generator_is_listed_and_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    monkeypatch.delitem(sys.modules, "genbench_baselines.diffusers_unet", raising=False)
    assert "diffusers-unet" in registry.names()
    with pytest.raises(MissingExtra, match=r"genbench\[diffusers\]"):
        registry.load("diffusers-unet")
    with pytest.raises(ValueError, match=r"genbench\[diffusers\]"):
        DDPMConfig(sampler="dpmpp")
    assert DDPMConfig(sampler="ddim").sampler == "ddim"  # the built-ins need nothing
    monkeypatch.delitem(sys.modules, "genbench_baselines.diffusers_unet", raising=False)


def test_sampler_sweep_trains_once_and_plots_one_curve_per_sampler(tmp_path):
    """--sweep over the sampler and its steps trains diffusers-unet once and re-samples it;
    the quality-vs-NFE panel then draws one line per sampler through its step counts."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from typer.testing import CliRunner

    from genbench.cli import app
    from genbench.report.collect import load_runs
    from genbench.report.plots import PlotWriter
    from genbench.report.stats import summarize

    sets = ["sample.n=4", "train.kimg=0.064"] + [f"diffusers-unet.{k}={v}" for k, v in UNET.items()]
    args = ["run", "-e", "smoke", "--models", "diffusers-unet", "--results", str(tmp_path)]
    args += [x for s in sets for x in ("--set", s.replace("'", '"'))]
    args += [
        "--sweep",
        "diffusers-unet.sampler=ddim,heun",
        "--sweep",
        "diffusers-unet.sample_steps=2,3",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ms = [json.loads(p.read_text()) for p in tmp_path.glob("*/metrics.json")]
    assert len(ms) == 4 and sum(m["train"]["reused_from"] is None for m in ms) == 1
    nfe = {(m["sampling"]["sampler"], m["sampling"]["steps"]): m["sampling"]["nfe"] for m in ms}
    assert nfe == {("ddim", 2): 4, ("ddim", 3): 6, ("heun", 2): 6, ("heun", 3): 10}

    summary = summarize(load_runs(tmp_path))
    (group,) = summary.groups
    writer = PlotWriter(summary, tmp_path)
    agg = summary.rows(group, "mean")
    fig, ax = plt.subplots()
    xs = [float(v) for v in agg["nfe"]]
    writer._sampler_curves(ax, group, agg, xs, [1.0 / x for x in xs])
    lines = {line.get_label(): sorted(line.get_xdata()) for line in ax.lines}
    plt.close(fig)
    assert lines == {"diffusers-unet · ddim": [4, 6], "diffusers-unet · heun": [6, 10]}
