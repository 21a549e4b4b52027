"""Snapshot scoring during training: quality vs images seen and vs training FLOPs."""

import json

import pytest
import torch

from genbench.config import DataConfig, ExperimentConfig, MetricsConfig, SampleConfig, TrainConfig
from genbench.metrics import scoring
from genbench.runs.grid import run_experiment
from tests.standin import standin_choice


def test_snapshots_are_scored_at_the_configured_kimg(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
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
    (out,) = run_experiment(exp, results_dir=tmp_path / "r", extractor=standin_choice())
    assert out.status == "done", out.error
    recs = [json.loads(line) for line in (out.run_dir / "snapshots.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 6] and [r["kimg"] for r in recs] == [0.032, 0.096]
    flops = out.metrics["train"]["flops_per_step"]
    assert [r["flops"] for r in recs] == [2 * flops, 6 * flops]
    assert all(
        r["n"] == 16 and r["scores"]["fid"] is not None and r["scores"]["fid"] >= 0 for r in recs
    )
    assert recs[0]["fingerprint"]
    # Each point's images are saved, with the sampling interval's replicates beside them.
    first = out.run_dir / recs[0]["images"]
    assert len(list(first.glob("*.png"))) == 16 and (first / "bootstrap.json").is_file()
    assert recs[0]["bootstrap"]["kid_ci95"] and recs[0]["n_reference"] == 24

    # Taking snapshots leaves training untouched: same final weights as a run without them.
    plain = exp.model_copy(update={"metrics": exp.metrics.model_copy(update={"enabled": False})})
    (other,) = run_experiment(plain, results_dir=tmp_path / "plain")
    a = torch.load(sorted((out.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    b = torch.load(sorted((other.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    for name, t in a["model"]["modules"]["G"].items():
        assert torch.equal(t, b["model"]["modules"]["G"][name]), name


def test_snapshots_at_fractions_of_a_flop_budget_recompute_from_their_pngs(tmp_path, monkeypatch):
    import torch_fidelity

    from genbench.data import load_data
    from genbench.utils.files import save_png
    from tests.standin import STANDIN_NAME

    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    data = DataConfig(source="digits", resolution=16, split="random")
    probe = ExperimentConfig(
        name="probe", models=["dcgan"], data=data, sample=SampleConfig(n=8, batch_size=8),
        train=TrainConfig(kimg=0.016, batch_size=16, eval_images=0),
        metrics=MetricsConfig(enabled=False),
    )  # fmt: skip
    (p,) = run_experiment(probe, results_dir=tmp_path / "probe")
    per_step = p.metrics["train"]["flops_per_step"]
    exp = probe.model_copy(
        update={
            "name": "snapflops",
            "train": TrainConfig(
                budget="tflop", tflop=8 * per_step / 1e12, batch_size=16, eval_images=0
            ),
            "sample": SampleConfig(n=24, batch_size=8),
            "metrics": MetricsConfig(
                names=["kid"], classifier=False, memorization=False, per_class=False,
                snapshot_fractions=[0.25, 0.5], snapshot_n=16, kid_subset_size=16,
            ),
        }
    )  # fmt: skip
    (out,) = run_experiment(exp, results_dir=tmp_path / "r", extractor=standin_choice())
    assert out.status == "done", out.error
    assert out.metrics["train"]["steps"] == 8
    recs = [json.loads(line) for line in (out.run_dir / "snapshots.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4] and [r["flops"] for r in recs] == [
        2 * per_step,
        4 * per_step,
    ]
    # The number is torch-fidelity's on the saved PNGs against the run's reference images.
    bundle = load_data(data)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for i, img in enumerate(scoring.seeded_subset(bundle.holdout, 24).images):
        save_png(img, ref_dir / f"{i:06d}.png")
    direct = torch_fidelity.calculate_metrics(
        input1=str(out.run_dir / recs[1]["images"]), input2=str(ref_dir),
        feature_extractor=STANDIN_NAME, kid=True, kid_subset_size=16, cuda=False,
        cache=False, verbose=False, save_cpu_ram=True,
    )  # fmt: skip
    assert recs[1]["scores"]["kid"]["mean"] == pytest.approx(
        direct["kernel_inception_distance_mean"], rel=1e-4
    )
