import io
import json
import math

import pytest
import torch
from torch import nn

from genbench.contract import DataSpec
from genbench.diffusion import EMA, NoiseSchedule, UNet, lr_factor
from genbench.runs.grid import run_experiment
from genbench_baselines.cddpm import CDDPM, CDDPMConfig
from genbench_baselines.ddpm import DDPM, DDPMConfig
from tests.conftest import tiny_experiment

TINY = dict(
    base_channels=16,
    channel_mults=[1, 2],
    num_res_blocks=1,
    attn_resolutions=[4],
    num_heads=2,
    norm_groups=4,
    timesteps=100,
    sample_steps=5,
    sample_bf16=False,  # the sampling identities below are checked in fp32 (bf16: its own test)
)
CLASSES = DataSpec(resolution=8, channels=1, condition="classes", class_names=tuple("0123"))
CPU = torch.device("cpu")


def _randomize(module: nn.Module, seed: int = 0) -> None:
    # Zero-initialised output layers would make every prediction 0 and every comparison trivial.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# -- the schedule against direct float64 formulas -----------------------------------
def _direct_tables(betas: list[float]) -> dict[str, list[float]]:
    alphas = [1 - b for b in betas]
    ab, acc = [], 1.0
    for a in alphas:
        acc *= a
        ab.append(acc)
    ab_prev = [1.0, *ab[:-1]]
    post = [b * (1 - p) / (1 - a) for b, p, a in zip(betas, ab_prev, ab, strict=True)]
    return {"betas": betas, "ab": ab, "ab_prev": ab_prev, "post": post}


def _close(t: torch.Tensor, ref: list[float]) -> bool:
    return torch.allclose(t, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("T", [1000, 37])
def test_linear_schedule_matches_float64_formulas(T):
    s = NoiseSchedule(kind="linear", timesteps=T)
    d = _direct_tables([1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)])
    assert s.betas.dtype == torch.float64
    assert _close(s.betas, d["betas"]) and _close(s.alphas_cumprod, d["ab"])
    assert _close(s.alphas_cumprod_prev, d["ab_prev"]) and _close(s.posterior_variance, d["post"])


@pytest.mark.parametrize("T", [1000, 50])
def test_cosine_schedule_matches_float64_formulas(T):
    def f(t):
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f(t + 1) / f(t), 0.999) for t in range(T)]
    s = NoiseSchedule(kind="cosine", timesteps=T)
    d = _direct_tables(betas)
    assert _close(s.betas, d["betas"]) and _close(s.alphas_cumprod, d["ab"])
    assert _close(s.posterior_variance, d["post"])
    assert s.betas[-1] == 0.999  # the clip is active at the last step


def test_forward_process_and_posterior_match_ddpm_equations():
    T = 200
    s = NoiseSchedule(kind="linear", timesteps=T)
    d = _direct_tables([1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)])
    g = torch.Generator().manual_seed(0)
    x0, noise, xt = (torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0, 1, 99, 199])
    xt_ = s.add_noise(x0, noise, t)
    mean, var = s.posterior(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        ab, abp, b = d["ab"][ti], d["ab_prev"][ti], d["betas"][ti]
        assert torch.allclose(
            xt_[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i], rtol=1e-12
        )
        ref = (
            math.sqrt(abp) * b / (1 - ab) * x0[i] + math.sqrt(1 - b) * (1 - abp) / (1 - ab) * xt[i]
        )
        assert torch.allclose(mean[i], ref, rtol=1e-12, atol=1e-14)
        assert math.isclose(float(var[i].flatten()[0]), d["post"][ti], rel_tol=1e-12)
        # An int time index (sampling) gives what the per-image tensor index (training) gives.
        m_int, v_int = s.posterior(x0[i : i + 1], xt[i : i + 1], ti)
        assert torch.allclose(m_int[0], mean[i], rtol=1e-12) and math.isclose(
            v_int, d["post"][ti], rel_tol=1e-12
        )


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddim_eta1_all_steps_is_ancestral_with_posterior_variance(kind, clip):
    T = 50
    s = NoiseSchedule(kind=kind, timesteps=T)
    g = torch.Generator().manual_seed(1)
    xt = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64) * 1.5
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    assert s.sampling_timesteps(T) == list(range(T - 1, -1, -1))
    for t in [T - 1, 30, 7, 1, 0]:
        m_ddim, v_ddim = s.ddim_mean_var(eps, xt, t, t - 1, eta=1.0, clip=clip)
        m_anc, v_anc = s.ancestral_mean_var(eps, xt, t, variance="posterior", clip=clip)
        assert torch.allclose(m_ddim, m_anc, rtol=1e-10, atol=1e-12)
        assert math.isclose(v_ddim, v_anc, rel_tol=1e-10, abs_tol=1e-15)
        assert math.isclose(v_anc, float(s.posterior_variance[t]), rel_tol=1e-12)


def test_ancestral_step_is_ddpm_algorithm_2():
    T = 100
    s = NoiseSchedule(timesteps=T)
    g = torch.Generator().manual_seed(2)
    xt, eps = (torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    for t in [99, 50, 0]:
        a, b, ab = float(s.alphas[t]), float(s.betas[t]), float(s.alphas_cumprod[t])
        mean, var = s.ancestral_mean_var(eps, xt, t, variance="beta")
        ref = (xt - b / math.sqrt(1 - ab) * eps) / math.sqrt(a)
        assert torch.allclose(mean, ref, rtol=1e-10, atol=1e-12)
        assert var == (0.0 if t == 0 else pytest.approx(b, rel=1e-12))
    _, v0 = s.ddim_mean_var(eps, xt, 50, 30, eta=0.0)
    assert v0 == 0.0


def test_sampling_timesteps_span_the_whole_chain():
    s = NoiseSchedule(timesteps=1000)
    ts = s.sampling_timesteps(50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError):
        s.sampling_timesteps(1001)


# -- network -------------------------------------------------------------------------
@pytest.mark.parametrize("res", [8, 16])
def test_unet_shapes_and_gradient_checkpointing(res):
    torch.manual_seed(0)
    kw = dict(
        channels=3,
        resolution=res,
        base_channels=16,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(res // 2,),
        num_heads=2,
        norm_groups=4,
    )
    net = UNet(**kw)
    _randomize(net)
    ckpt = UNet(**kw, grad_checkpoint=True)
    ckpt.load_state_dict(net.state_dict())
    x, t = torch.randn(2, 3, res, res), torch.tensor([3, 700])
    out = net(x, t)
    assert out.shape == x.shape
    out.square().mean().backward()
    ckpt(x, t).square().mean().backward()
    for p, q in zip(net.parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
    with pytest.raises(ValueError, match="no condition embedding"):
        net(x, t, torch.tensor([0, 1]))


def test_unsupported_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 4"):
        DDPM.check_spec(
            DataSpec(resolution=10, channels=1), DDPMConfig(**{**TINY, "channel_mults": [1, 2, 2]})
        )


# -- training -------------------------------------------------------------------------
def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    m = DDPM(spec=DataSpec(resolution=8, channels=1), config=DDPMConfig(**TINY), device=CPU)
    # Smooth images (2x2 blocks upsampled) are learnable in a few steps, unlike pixel noise.
    x = nn.functional.interpolate(torch.rand(16, 1, 2, 2) * 2 - 1, size=8, mode="bilinear")
    before = m.evaluate(x, None)["test_loss"]  # fixed t and noise: comparable numbers
    for _ in range(30):
        m.train_step(x, None)
    after = m.evaluate(x, None)["test_loss"]
    assert after < 0.6 * before
    assert m.step == 30


def test_ema_update_math():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.9, start_step=2)
    history = []
    for _ in range(4):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        history.append(net.weight.detach().clone())
        ema.update(net)
    expected = history[1]  # before the start step the copy follows the weights
    for w in history[2:]:
        expected = 0.9 * expected + 0.1 * w
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    assert not torch.allclose(ema.module.weight, net.weight)
    assert ema.updates == 4 and not ema.module.weight.requires_grad


def test_lr_schedules():
    assert lr_factor(0, kind="cosine", total_steps=100) == 1.0
    assert lr_factor(50, kind="cosine", total_steps=100) == pytest.approx(0.5)
    assert lr_factor(100, kind="cosine", total_steps=100) == pytest.approx(0.0)
    assert lr_factor(4, kind="constant", total_steps=None, warmup_steps=10) == pytest.approx(0.5)
    one = [lr_factor(s, kind="onecycle", total_steps=100) for s in range(100)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0)
    assert one.index(max(one)) == 30 and one[-1] == pytest.approx(1 / 25e4)
    with pytest.raises(ValueError, match="schedule_kimg"):
        DDPMConfig(lr_schedule="cosine")
    cfg = DDPMConfig(**TINY, lr_schedule="cosine", schedule_kimg=0.064, warmup_steps=0)
    m = DDPM(spec=DataSpec(resolution=8, channels=1), config=cfg, device=CPU)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    lrs = [m.train_step(x, None)["lr"] for _ in range(4)]  # 64 images / 16 = 4 steps
    assert lrs[0] == pytest.approx(cfg.lr) and lrs[2] == pytest.approx(cfg.lr / 2)


# -- conditioning and guidance --------------------------------------------------------
def _cddpm(spec=CLASSES, **kw) -> CDDPM:
    torch.manual_seed(0)
    m = CDDPM(spec=spec, config=CDDPMConfig(**{**TINY, **kw}), device=CPU)
    _randomize(m.net)
    m.ema.update(m.net)  # EMA starts as a copy, so sampling uses the randomized weights
    return m.eval()


def test_cfg_scale_1_is_conditional_and_0_unconditional():
    m = _cddpm()
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 2, 3])
    with torch.no_grad():
        cond = m._forward(m.net, x, 40, y)
        uncond = m._forward(m.net, x, 40, None)
        assert not torch.allclose(cond, uncond, atol=1e-3)
        assert torch.allclose(m.guided(m.net, x, 40, y, scale=1.0), cond, atol=1e-5)
        assert torch.allclose(m.guided(m.net, x, 40, y, scale=0.0), uncond, atol=1e-5)
        g3 = m.guided(m.net, x, 40, y, scale=3.0)
        assert torch.allclose(g3, uncond + 3 * (cond - uncond), atol=1e-4)


def test_sampling_precision_follows_the_device_rule_and_is_recorded(monkeypatch):
    from genbench.utils import device as gdev

    def sample(native: bool, bf16: bool) -> tuple[torch.Tensor, str]:
        monkeypatch.setattr(gdev, "cpu_has_native_bf16", lambda: native)
        m = _cddpm(sample_bf16=bf16)
        y = torch.tensor([0, 1, 2, 3])
        x = m.sample(4, labels=y, generator=torch.Generator().manual_seed(3))
        return x, m.sampling_protocol()["precision"]

    fp32, p32 = sample(native=True, bf16=False)
    bf16, p16 = sample(native=True, bf16=True)
    emulated, pe = sample(native=False, bf16=True)  # no native bf16: sample_bf16 means fp32
    assert (p32, p16, pe) == ("fp32", "bf16", "fp32")
    assert torch.equal(emulated, fp32)
    assert not torch.equal(bf16, fp32)  # bf16 autocast really ran
    assert (bf16 - fp32).abs().mean() < 0.05  # and it samples the same images, to bf16 accuracy


def test_one_hot_mixture_weights_equal_class_sampling():
    m = _cddpm()
    y = torch.tensor([0, 1, 2, 3])
    plain = m.sample(4, labels=y, generator=torch.Generator().manual_seed(3))
    onehot = m.sample(
        4, labels=nn.functional.one_hot(y, 4).float(), generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(plain, onehot, atol=1e-5)
    mix = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).repeat(4, 1)
    mixed = m.sample(4, labels=mix, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(mixed, plain, atol=1e-3)
    emb = m.net.cond.table.weight
    assert torch.allclose(m.net.cond(mix[:1], n=1)[0], (emb[0] + emb[1]) / 2, atol=1e-6)


def test_attribute_vectors_condition_the_model():
    spec = DataSpec(
        resolution=8, channels=1, condition="attributes", attribute_names=("a", "b", "c")
    )
    m = _cddpm(spec)
    attrs = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    m.train()
    assert math.isfinite(m.train_step(torch.rand(2, 1, 8, 8) * 2 - 1, attrs)["loss"])
    m.eval()
    a = m.sample(2, labels=attrs, generator=torch.Generator().manual_seed(0))
    b = m.sample(2, labels=attrs.flip(0), generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 8, 8) and not torch.allclose(a, b, atol=1e-3)


def test_cddpm_rejects_unlabelled_data():
    with pytest.raises(ValueError, match="needs class labels or attributes") as err:
        CDDPM.check_spec(DataSpec(resolution=8, channels=1), CDDPMConfig(**TINY))
    assert "\n" not in str(err.value)


def test_label_dropout_uses_the_null_label():
    m = _cddpm(label_dropout=1.0)
    y = torch.tensor([0, 1])
    labels, drop = m._train_condition(y, 2)
    assert drop.all()
    assert torch.equal(m.net.cond(labels, drop, n=2), m.net.cond(None, n=2))


# -- sampling and checkpoints ---------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_is_reproducible_and_in_range(sampler):
    m = _cddpm(sampler=sampler)
    y = torch.tensor([1, 2])
    a = m.sample(2, labels=y, generator=torch.Generator().manual_seed(5))
    b = m.sample(2, labels=y, generator=torch.Generator().manual_seed(5))
    c = m.sample(2, labels=y, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert m.sampling_protocol()["nfe"] == 2 * TINY["sample_steps"]


def test_checkpoint_round_trip_reproduces_samples():
    cfg = CDDPMConfig(**TINY, ema_start=1, ema_decay=0.5)
    torch.manual_seed(0)
    a = CDDPM(spec=CLASSES, config=cfg, device=CPU)
    x, y = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randint(0, 4, (8,))
    for _ in range(3):
        a.train_step(x, y)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    torch.manual_seed(1)
    b = CDDPM(spec=CLASSES, config=cfg, device=CPU)
    labels = torch.tensor([0, 1, 2, 3])
    ref = a.eval().sample(4, labels=labels, generator=torch.Generator().manual_seed(9))
    before = b.eval().sample(4, labels=labels, generator=torch.Generator().manual_seed(9))
    assert not torch.equal(ref, before)
    b.load_state_dict(state)
    after = b.sample(4, labels=labels, generator=torch.Generator().manual_seed(9))
    assert torch.equal(ref, after)
    assert b.step == 3 and b.ema.updates == 3
    # The EMA weights differ from the raw ones, so the round trip really carried them.
    assert not torch.equal(b.ema.module.stem.weight, b.net.stem.weight)


def test_end_to_end_runs_write_samples_with_nfe(tmp_path):
    exp = tiny_experiment(["ddpm", "cddpm"], resolution=8, kimg=0.064, n=6)
    small = {**TINY, "sample_steps": 4}
    exp = exp.model_copy(update={"model": {"ddpm": small, "cddpm": small}})
    outcomes = run_experiment(exp, results_dir=tmp_path)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    for o, nfe in zip(outcomes, [4, 8], strict=True):
        manifest = json.loads((o.run_dir / "samples" / "manifest.json").read_text())
        assert manifest["sampler"]["nfe"] == nfe and manifest["sampler"]["sampler"] == "ddim"
        assert len(list((o.run_dir / "samples").glob("*.png"))) == 6
        metrics = json.loads((o.run_dir / "metrics.json").read_text())
        assert metrics["sampling"]["nfe"] == nfe and metrics["train"]["flops_per_step"] > 0
    assert manifest["labels"] is not None and len(manifest["labels"]) == 6
