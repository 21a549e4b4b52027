"""A guidance-scale sweep trains cddpm once and re-samples it per scale."""

import json

from typer.testing import CliRunner

from genbench.cli import app


def test_cfg_scale_sweep_trains_once(tmp_path):
    args = [
        "run",
        "-e",
        "smoke",
        "--models",
        "cddpm",
        "--set",
        "train.kimg=0.064",
        "--set",
        "cddpm.sample_steps=2",
        "--set",
        "cddpm.base_channels=8",
        "--sweep",
        "cddpm.guidance_scale=0,1,3",
        "--results",
        str(tmp_path),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = [
        json.loads(p.read_text()) for p in sorted(tmp_path.glob("smoke-cddpm-*/metrics.json"))
    ]
    assert len(metrics) == 3
    trained = [m for m in metrics if m["train"]["reused_from"] is None]
    assert len(trained) == 1
    assert {m["train"]["train_key"] for m in metrics} == {trained[0]["train"]["train_key"]}
    scales = sorted(
        json.loads(p.read_text())["sampler"].get("guidance_scale", -1)
        for p in tmp_path.glob("*/samples/manifest.json")
    )
    assert scales == [0, 1, 3]
