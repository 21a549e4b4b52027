"""flow (rectified flow) and edm (Karras et al. 2022): path, preconditioning, samplers on a
Gaussian whose exact velocity / denoiser is known, NFE and FLOP accounting, sweeps."""

import json
import math
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import DataConfig
from genbench.contract import DataSpec
from genbench.data import load_data
from genbench.diffusion import karras_sigmas, solve_ode, solver_nfe, uniform_times
from genbench.train.loop import measure_flops
from genbench_baselines.ddpm import DDPM, DDPMConfig
from genbench_baselines.edm import EDM, EDMConfig, loss_weight, preconditioning
from genbench_baselines.flow import Flow, FlowConfig, interpolate, velocity_target

TINY = dict(
    base_channels=16,
    channel_mults=[1, 2],
    num_res_blocks=1,
    attn_resolutions=[4],
    num_heads=2,
    norm_groups=4,
    sample_bf16=False,
)
SPEC = DataSpec(resolution=8, channels=1)
CLASSES = DataSpec(resolution=8, channels=1, condition="classes", class_names=tuple("0123"))
CPU = torch.device("cpu")
MU, S = 0.2, 0.25  # the Gaussian target N(MU, S^2) per pixel; |x| > 1 is 3.2 S away


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(source="digits", resolution=8))


def _model(cls, spec=SPEC, **kw):
    torch.manual_seed(0)
    cfg = cls.Config(**{**TINY, **kw})
    cls.check_spec(spec, cfg)
    return cls(spec=spec, config=cfg, device=CPU)


# -- the flow path and its target -------------------------------------------------------
def test_interpolant_ends_at_noise_and_data_and_moves_at_x1_minus_x0():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    assert torch.equal(interpolate(x0, x1, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, x1, torch.ones(3)), x1)
    t = torch.tensor([0.1, 0.5, 0.9])
    mid = interpolate(x0, x1, t)
    assert torch.allclose(mid[1], (x0[1] + x1[1]) / 2)
    # The target is the path's time derivative, the same at every t.
    h = 1e-3
    slope = (interpolate(x0, x1, t + h) - interpolate(x0, x1, t)) / h
    assert torch.allclose(slope, velocity_target(x0, x1), atol=1e-3)
    assert torch.equal(velocity_target(x0, x1), x1 - x0)


class ExactVelocity(nn.Module):
    """v(x_t, t) = (x1 - x_t) / (1 - t) for a known batch x1: zero flow-matching loss."""

    def __init__(self, x1: torch.Tensor) -> None:
        super().__init__()
        self.x1, self.w = x1, nn.Parameter(torch.zeros(()))

    def forward(self, x, t, labels=None, drop=None):
        t = (t / 1000).view(-1, 1, 1, 1)  # flow feeds the UNet 1000 t
        return (self.x1 - x) / (1 - t) + self.w


class Zero(nn.Module):
    def forward(self, x, t, labels=None, drop=None):
        return torch.zeros_like(x)


def test_flow_loss_is_mse_to_x1_minus_x0():
    m = _model(Flow)
    x1 = torch.rand(4, 1, 8, 8) * 2 - 1
    exact = ExactVelocity(x1)
    g = torch.Generator().manual_seed(1)
    assert m._loss(exact, x1, None, generator=g, train=False).item() < 1e-8
    # A zero prediction costs E|x1 - x0|^2 with the loss's own times and noise.
    loss = m._loss(Zero(), x1, None, generator=torch.Generator().manual_seed(1), train=False)
    g = torch.Generator().manual_seed(1)
    torch.randn(4, generator=g)  # the times come first
    x0 = torch.randn(x1.shape, generator=g)
    assert loss.item() == pytest.approx(((x1 - x0) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["logit-normal", "uniform"])
def test_flow_training_times_follow_their_distribution(kind):
    m = _model(Flow, time_sampling=kind)
    t = m._times(20000, torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1
    assert t.mean().item() == pytest.approx(0.5, abs=0.01)
    inner = ((t > 0.25) & (t < 0.75)).float().mean().item()
    # logit-normal(0, 1) puts 73% of its mass on the middle half, uniform 50%
    assert inner == pytest.approx(0.727 if kind == "logit-normal" else 0.5, abs=0.015)


# -- EDM's preconditioning, weighting and noise levels ---------------------------------
def test_edm_preconditioning_matches_the_papers_formulas():
    sd = 0.5
    for s in (0.002, 0.5, 1.0, 80.0):
        c_skip, c_out, c_in, c_noise = (v.item() for v in preconditioning(torch.tensor(s), sd))
        assert c_skip == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-6)
        assert c_out == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-6)
        assert c_in == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-6)
        assert c_noise == pytest.approx(math.log(s) / 4, rel=1e-6, abs=1e-7)
        # lambda(sigma) c_out^2 = 1: every noise level weighs F's error equally
        assert loss_weight(torch.tensor(s), sd).item() * c_out**2 == pytest.approx(1, rel=1e-5)
    # sigma = sigma_data: c_skip 1/2, c_in 1/(sd sqrt 2)
    c_skip, _, c_in, _ = preconditioning(torch.tensor(sd), sd)
    assert c_skip.item() == pytest.approx(0.5) and c_in.item() == pytest.approx(2 / math.sqrt(2))


def test_edm_training_sigmas_are_log_normal():
    m = _model(EDM)
    ln = m._sigmas(20000, torch.Generator().manual_seed(0)).log()
    assert ln.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert ln.std().item() == pytest.approx(1.2, abs=0.03)


def test_karras_sigmas_endpoints_and_rho_spacing():
    s = karras_sigmas(18)
    assert len(s) == 19 and s[-1] == 0.0
    assert s[0] == pytest.approx(80.0) and s[17] == pytest.approx(0.002)
    assert all(a > b for a, b in pairwise(s))
    roots = [v ** (1 / 7) for v in s[:-1]]
    gaps = [a - b for a, b in pairwise(roots)]
    assert max(gaps) - min(gaps) < 1e-9  # equal steps in sigma^(1/rho)
    assert karras_sigmas(5, sigma_min=1, sigma_max=5, rho=1) == pytest.approx([5, 4, 3, 2, 1, 0])
    assert karras_sigmas(1) == [80.0, 0.0]
    assert uniform_times(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(3, sigma_min=2, sigma_max=1)


# -- samplers on a Gaussian target with a known exact ODE -------------------------------
def exact_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[y | y + sigma n = x] for y ~ N(MU, S^2)."""
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """E[x1 - x0 | x_t = x] for x0 ~ N(0, 1), x1 ~ N(MU, S^2)."""
    var = (1 - t) ** 2 + t**2 * S**2
    return MU + (t * S**2 - (1 - t)) / var * (x - t * MU)


def _standard_normal(n: int) -> torch.Tensor:
    """Noise with mean exactly 0 and std exactly 1: what is left is the sampler's error."""
    z = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return (z - z.mean()) / z.std()


def _moments(x: torch.Tensor) -> tuple[float, float]:
    return x.mean().item(), x.std().item()


def _solve_gaussian(ode: str, solver: str, steps: int) -> tuple[float, float]:
    """Mean and std of the target reached from exactly standardised noise: the solver's error."""
    if ode == "edm":
        f = lambda x, s: (x - exact_denoiser(x, s)) / s  # noqa: E731
        x, times = _standard_normal(20000) * 80, karras_sigmas(steps)
    else:
        f, x, times = exact_velocity, _standard_normal(20000), uniform_times(steps)
    return _moments(solve_ode(f, x, times, solver=solver))


# Heun at 18 steps (35 NFE): the spread within its discretisation error on this target.
@pytest.mark.parametrize(("ode", "rel18"), [("edm", 0.08), ("flow", 0.03)])
def test_heun_reaches_the_gaussian_at_second_order(ode, rel18):
    mean, std = _solve_gaussian(ode, "heun", 18)
    assert mean == pytest.approx(MU, abs=1e-3) and std == pytest.approx(S, rel=rel18)
    mean, std = _solve_gaussian(ode, "heun", 72)
    assert mean == pytest.approx(MU, abs=1e-3) and std == pytest.approx(S, rel=rel18 / 10)
    # Error ~ 1/n^2 for Heun, ~ 1/n for Euler: doubling the steps divides it by 4 and by 2.
    err = {
        (k, n): abs(_solve_gaussian(ode, k, n)[1] - S) for k in ("heun", "euler") for n in (18, 36)
    }
    assert 3 < err["heun", 18] / err["heun", 36] < 5
    assert 1.6 < err["euler", 18] / err["euler", 36] < 2.4
    assert err["heun", 18] < err["euler", 36]  # at fewer evaluations (35 vs 36)


def test_euler_reaches_the_gaussian_with_many_steps():
    for ode in ("edm", "flow"):
        mean, std = _solve_gaussian(ode, "euler", 200)
        assert mean == pytest.approx(MU, abs=1e-3) and std == pytest.approx(S, rel=0.02)


class ExactNet(nn.Module):
    """Stands in for the UNet: returns what makes the model's prediction exact."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.w = kind, nn.Parameter(torch.zeros(()))
        self.calls = 0
        self.rows = 0

    def forward(self, x, t, labels=None, drop=None):
        self.calls, self.rows = self.calls + 1, self.rows + len(x)
        if self.kind == "flow":
            return exact_velocity(x, float(t[0]) / 1000) + self.w
        sigma = float((4 * t[0]).exp())  # c_noise = ln(sigma) / 4
        c_skip, c_out, c_in, _ = (float(v) for v in preconditioning(torch.tensor(sigma), 0.5))
        xin = x / c_in
        return (exact_denoiser(xin, sigma) - c_skip * xin) / c_out + self.w


@pytest.mark.parametrize(("cls", "steps"), [(Flow, 18), (EDM, 40)])
def test_models_sample_the_gaussian_through_their_own_pipeline(cls, steps):
    """Network in and out (time scale, preconditioning), the ODE and the [0, 1] output."""
    m = _model(cls, use_ema=False, sample_steps=steps)
    m.net = ExactNet("flow" if cls is Flow else "edm")
    out = m.sample(400, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, std = _moments(out)
    assert mean == pytest.approx(MU, abs=0.01) and std == pytest.approx(S, rel=0.03)
    # NFE as recorded = network evaluations per image actually made: Heun's 2n - 1
    assert m.net.calls == m.sampling_protocol()["nfe"] == 2 * steps - 1


# -- NFE and FLOP accounting ---------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 5, 18])
def test_solvers_evaluate_as_often_as_they_say(steps):
    for solver in ("euler", "heun"):
        calls: list[float] = []

        def f(x, t, calls=calls):
            calls.append(t)
            return -x

        solve_ode(f, torch.ones(2), uniform_times(steps), solver=solver)
        assert len(calls) == solver_nfe(solver, steps)
    assert solver_nfe("heun", steps) == 2 * steps - 1 and solver_nfe("euler", steps) == steps


@pytest.mark.parametrize("cls", [Flow, EDM])
def test_flops_per_step_match_ddpm_and_per_sample_are_nfe_times_one_pass(cls):
    """Same UNet: a compute-matched budget buys flow, edm and ddpm the same steps; a sample
    costs NFE network passes."""
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    m = _model(cls, sample_steps=3)
    ddpm = _model(DDPM, timesteps=100)
    ours, theirs = measure_flops(m, x, None, keep=None), measure_flops(ddpm, x, None, keep=None)
    assert ours == pytest.approx(theirs, rel=0.01)
    with FlopCounterMode(display=False) as one:
        m.net(x[:1], torch.zeros(1))
    m.eval()
    with FlopCounterMode(display=False) as sample:
        m.sample(1, generator=torch.Generator().manual_seed(0))
    nfe = m.sampling_protocol()["nfe"]
    assert nfe == 5
    assert sample.get_total_flops() == pytest.approx(nfe * one.get_total_flops(), rel=0.01)


# -- conditioning, training, checkpoints -------------------------------------------------
@pytest.mark.parametrize("cls", [Flow, EDM])
def test_conditional_setting_guides_as_cddpm_does(cls):
    with pytest.raises(ValueError, match="needs class labels or attributes") as err:
        cls.check_spec(SPEC, cls.Config(**TINY, conditional=True))
    assert "\n" not in str(err.value)
    m = _model(cls, spec=CLASSES, conditional=True, sample_steps=2)
    assert m.conditional and m.net.cond is not None
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x, y, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 2, 3]), 0.5
    with torch.no_grad():
        cond, uncond = m._forward(m.net, x, t, y), m._forward(m.net, x, t, None)
        assert not torch.allclose(cond, uncond, atol=1e-3)
        assert torch.allclose(m.guided(m.net, x, t, y, scale=1.0), cond, atol=1e-5)
        assert torch.allclose(m.guided(m.net, x, t, y, scale=0.0), uncond, atol=1e-5)
    proto = m.sampling_protocol()
    assert proto["nfe"] == 2 * 3 and proto["guidance_scale"] == 3.0
    uncond_model = _model(cls, spec=CLASSES)  # conditional = false: labels are ignored
    assert not uncond_model.conditional and uncond_model.net.cond is None


@pytest.mark.parametrize("cls", [Flow, EDM])
def test_loss_falls_on_a_fixed_batch_and_held_out_loss_is_fixed(cls, digits):
    m = _model(cls, warmup_steps=0)
    x, _ = digits.train.batch(torch.arange(8))
    before = m.evaluate(x, None)["test_loss"]
    assert before == m.evaluate(x, None)["test_loss"]  # fixed times and noise
    for _ in range(10):
        logs = m.train_step(x, None)
    assert math.isfinite(logs["loss"])
    assert m.evaluate(x, None)["test_loss"] < 0.9 * before


def test_flow_config_rejects_bad_values():
    with pytest.raises(ValueError):
        FlowConfig(sampler="ddim")
    with pytest.raises(ValueError, match="sigma_min"):
        EDMConfig(sigma_min=100.0)
    with pytest.raises(ValueError):
        DDPMConfig(lr_schedule="cosine")  # the shared OptimConfig's rule still holds


# -- a sampler sweep re-samples one training ----------------------------------------------
@pytest.mark.parametrize("name", ["flow", "edm"])
def test_sample_steps_sweep_trains_once_and_records_nfe(tmp_path, name):
    args = ["run", "-e", "smoke", "--models", name, "--set", "train.kimg=0.064"]
    args += ["--set", f"{name}.base_channels=8", "--sweep", f"{name}.sample_steps=1,2,3"]
    res = CliRunner().invoke(app, [*args, "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    metrics = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/metrics.json"))]
    assert len(metrics) == 3
    assert sum(m["train"]["reused_from"] is None for m in metrics) == 1
    assert sorted(m["sampling"]["nfe"] for m in metrics) == [1, 3, 5]
    assert {m["sampling"]["sampler"] for m in metrics} == {"heun"}
