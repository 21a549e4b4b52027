"""Snapshot scoring during training: quality vs images seen and vs training FLOPs."""

import json

import torch

from genbench.config import DataConfig, ExperimentConfig, MetricsConfig, SampleConfig, TrainConfig
from genbench.metrics import scoring
from genbench.runs.grid import run_experiment
from tests.standin import standin_choice


def test_snapshots_are_scored_at_the_configured_kimg(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    exp = ExperimentConfig(
        name="snap",
        models=["dcgan"],
        data=DataConfig(source="digits", resolution=16, split="random"),
        train=TrainConfig(kimg=0.128, batch_size=16, eval_images=0),
        sample=SampleConfig(n=24, batch_size=8),
        metrics=MetricsConfig(
            names=["fid"],
            classifier=False,
            memorization=False,
            per_class=False,
            snapshot_kimg=[0.032, 0.096],
            snapshot_n=16,
        ),
    )
    (out,) = run_experiment(exp, results_dir=tmp_path / "r")
    assert out.status == "done", out.error
    recs = [json.loads(line) for line in (out.run_dir / "snapshots.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 6] and [r["kimg"] for r in recs] == [0.032, 0.096]
    flops = out.metrics["train"]["flops_per_step"]
    assert [r["flops"] for r in recs] == [2 * flops, 6 * flops]
    assert all(
        r["n"] == 16 and r["scores"]["fid"] is not None and r["scores"]["fid"] >= 0 for r in recs
    )
    assert recs[0]["fingerprint"]

    # Taking snapshots leaves training untouched: same final weights as a run without them.
    plain = exp.model_copy(update={"metrics": exp.metrics.model_copy(update={"enabled": False})})
    (other,) = run_experiment(plain, results_dir=tmp_path / "plain")
    a = torch.load(sorted((out.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    b = torch.load(sorted((other.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    for name, t in a["model"]["modules"]["G"].items():
        assert torch.equal(t, b["model"]["modules"]["G"][name]), name
