"""Pretrained weights scored without training, under the same protocol as trained runs."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import MetricsConfig
from genbench.runs.grid import run_experiment
from genbench.runs.pretrained import NOTE
from tests.conftest import tiny_experiment
from tests.standin import standin_choice

runner = CliRunner()
UNET = {
    "block_out_channels": [8, 16],
    "attn_resolutions": [8],
    "attention_head_dim": 4,
    "norm_num_groups": 4,
    "timesteps": 50,
    "sample_steps": 3,
}


def save_tiny_unet(folder, *, sample_size=16, classes=11):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    net = UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        num_class_embeds=classes,
    )
    net.save_pretrained(folder)
    return folder


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def scored_experiment(models, **pretrained):
    exp = tiny_experiment(models, n=16)
    return exp.model_copy(
        update={
            "metrics": MetricsConfig(
                names=["fid", "kid"], per_class=False, classifier=False, memorization=False
            ),
            "model": {"diffusers-unet": UNET},
            "pretrained": pretrained,
        }
    )


def test_pretrained_diffusers_folder_is_scored_like_a_trained_run(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler

    unet = save_tiny_unet(tmp_path / "unet")
    pipe = tmp_path / "pipe"
    save_tiny_unet(pipe / "unet")
    DDPMScheduler(num_train_timesteps=30, beta_schedule="squaredcos_cap_v2").save_pretrained(
        pipe / "scheduler"
    )
    res = tmp_path / "results"
    standin = standin_choice()
    (trained,) = run_experiment(
        scored_experiment(["diffusers-unet"]), results_dir=res, extractor=standin
    )
    (pre,) = run_experiment(
        scored_experiment(["diffusers-unet"], **{"diffusers-unet": str(unet)}),
        results_dir=res,
        extractor=standin,
    )
    (pre_pipe,) = run_experiment(
        scored_experiment(["diffusers-unet"], **{"diffusers-unet": str(pipe)}),
        results_dir=res,
        extractor=standin,
    )
    assert [o.status for o in (trained, pre, pre_pipe)] == ["done"] * 3
    assert len({trained.run_id, pre.run_id, pre_pipe.run_id}) == 3
    t, m = metrics_of(trained.run_dir), metrics_of(pre.run_dir)
    # Same protocol, so the same table; nothing about training is made up.
    assert m["protocol"]["fingerprint"] == t["protocol"]["fingerprint"]
    assert m["scores"]["fid"] > 0 and t["train"]["images_seen"] == 128
    for key in ("images_seen", "train_seconds", "flops_total", "flops_per_step", "steps"):
        assert m["train"][key] is None, key
    info = m["train"]["pretrained"]
    assert info["note"] == NOTE and info["source"] == str(unet) and info["format"] == "diffusers"
    weights = (unet / "diffusion_pytorch_model.safetensors").read_bytes()
    assert info["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert not (pre.run_dir / "checkpoints").exists()
    assert m["sampling"]["nfe"] == 6 and m["sampling"]["timesteps"] == 50
    # A pipeline folder brings its scheduler's betas (cosine, T = 30).
    p = metrics_of(pre_pipe.run_dir)["sampling"]
    assert (p["schedule"], p["timesteps"]) == ("cosine", 30)

    out = runner.invoke(app, ["report", str(res), "--no-figures"])
    assert out.exit_code == 0, out.output
    md = (res / "report" / "summary.md").read_text()
    matrix = re.compile(r"not separated|beats|beaten|ahead|behind|flagged")  # separation matrix
    rows = [
        line
        for line in md.splitlines()
        if line.startswith("| diffusers-unet") and not matrix.search(line)
    ]
    marked = [line for line in rows if NOTE in line]
    # Pretrained rows (mean and per seed, two sources): kimg, train time, FLOPs read n/a.
    assert len(marked) == 4 and all(line.count("| n/a ") == 3 for line in marked)
    assert [line.count("| n/a ") for line in rows if NOTE not in line] == [0, 0]
    # `genbench sample` reloads a pretrained run from its source (it has no checkpoint).
    grid = tmp_path / "grid.png"
    out = runner.invoke(app, ["sample", str(pre.run_dir), "--n", "4", "--out", str(grid)])
    assert out.exit_code == 0 and grid.stat().st_size > 0, out.output


def test_a_genbench_run_is_rescored_from_its_checkpoint(tmp_path):
    exp = tiny_experiment(["ddpm"])
    small = {"base_channels": 8, "channel_mults": [1, 2], "attn_resolutions": [], "num_heads": 1}
    small |= {"timesteps": 20, "sample_steps": 3}
    exp = exp.model_copy(update={"model": {"ddpm": small}})
    (trained,) = run_experiment(exp, results_dir=tmp_path / "a")
    again = exp.model_copy(update={"pretrained": {"ddpm": str(trained.run_dir)}})
    (pre,) = run_experiment(again, results_dir=tmp_path / "b")
    assert pre.status == "done"
    # Same weights, same sampling settings, same seed: the same images.
    for png in sorted((trained.run_dir / "samples").glob("*.png")):
        assert png.read_bytes() == (pre.run_dir / "samples" / png.name).read_bytes()
    info = metrics_of(pre.run_dir)["train"]["pretrained"]
    assert info["kind"] == "genbench run" and info["run_id"] == trained.run_id
    assert info["images_seen"] == 128 and info["note"] == NOTE

    # The network comes from the source run; sampling settings from this experiment.
    base = ["run", "-e", "smoke", "--results", str(tmp_path / "c"), "--set", "sample.n=4"]
    sets = ["ddpm.sampler=ddpm", "ddpm.sample_steps=2", "data.resolution=16"]
    args = [*base, "--models", "ddpm", "--pretrained", f"ddpm={trained.run_dir}"]
    ok = runner.invoke(app, [*args, *(x for s in sets for x in ("--set", s))])
    assert ok.exit_code == 0, ok.output
    (run,) = [d for d in (tmp_path / "c").iterdir() if d.name.startswith("smoke-ddpm-")]
    assert metrics_of(run)["sampling"]["nfe"] == 2
    assert metrics_of(run)["train"]["pretrained"]["generator"]["base_channels"] == 8

    wrong = runner.invoke(
        app, [*base, "--models", "cddpm", "--pretrained", f"cddpm={trained.run_dir}"]
    )
    assert wrong.exit_code == 2 and "is a ddpm run, not cddpm" in wrong.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "ddpm", "--pretrained", "ddpm=/no/such/dir"], "no such path"),
        (["--models", "dcgan", "--pretrained", "ddpm=/x"], "not in models"),
        (["--models", "ddpm", "--pretrained", "ddpm"], "MODEL=SOURCE"),
    ],
)
def test_pretrained_user_errors_are_one_line_and_exit_2(args, message, tmp_path):
    res = runner.invoke(app, ["run", "-e", "smoke", "--results", str(tmp_path), *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output


def test_unusable_diffusers_sources_fail_their_run_with_one_line(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    small = save_tiny_unet(tmp_path / "at8", sample_size=8)
    base = ["run", "-e", "smoke", "--models", "diffusers-unet", "--results", str(tmp_path / "r")]
    for source, message in [
        ("someorg/some-model", "unreachable here (offline)"),
        (str(small), "set data.resolution = 8"),
        (str(tmp_path / "missing"), "no such folder"),
    ]:
        res = runner.invoke(app, [*base, "--pretrained", f"diffusers-unet={source}"])
        assert res.exit_code == 1 and message in " ".join(res.output.split()), res.output
