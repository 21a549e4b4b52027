import json

import pytest
from typer.testing import CliRunner

from genbench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    res = runner.invoke(app, ["run", "--experiment", "smoke", "--results", str(out)])
    assert res.exit_code == 0, res.output
    return out


def run_dir(results):
    (d,) = [p for p in results.iterdir() if p.name.startswith("smoke-dcgan-s0-")]
    return d


def test_run_writes_the_documented_layout(smoke_results):
    d = run_dir(smoke_results)
    for name in (
        "config.toml",
        "train_log.jsonl",
        "metrics.json",
        "split.json",
        "status.json",
        "samples/manifest.json",
    ):
        assert (d / name).is_file(), name
    assert len(list((d / "samples").glob("*.png"))) == 32
    m = json.loads((d / "metrics.json").read_text())
    assert (
        m["train"]["images_seen"] == 256 and m["sampling"]["nfe"] == 1 and m["parameters_total"] > 0
    )
    assert json.loads((d / "status.json").read_text())["status"] == "done"


def test_second_run_skips_done_runs(smoke_results):
    res = runner.invoke(app, ["run", "--experiment", "smoke", "--results", str(smoke_results)])
    assert res.exit_code == 0 and "skipped" in res.output


def test_sample_and_report(smoke_results, tmp_path):
    out = tmp_path / "grid.png"
    res = runner.invoke(app, ["sample", str(run_dir(smoke_results)), "--n", "9", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(out).size == (3 * 18 + 2, 3 * 18 + 2)
    res = runner.invoke(app, ["report", str(smoke_results)])
    assert res.exit_code == 0, res.output
    csv = (smoke_results / "report" / "summary.csv").read_text()
    assert "dcgan" in csv and "train_img_s" in csv


def test_dry_run_prints_resolved_config_and_writes_nothing(tmp_path):
    res = runner.invoke(
        app,
        [
            "run",
            "-e",
            "smoke",
            "--set",
            "train.kimg=1",
            "--seeds",
            "0,1",
            "--dry-run",
            "--results",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("kimg = 1") == 2 and "smoke-dcgan-s1-" in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "-e", "smoke", "--models", "dcgna"], "did you mean 'dcgan'"),
        (["run", "-e", "smoke", "--set", "train.kimgs=1"], "unknown key 'train.kimgs'"),
        (["run", "-e", "no-such-experiment"], "unknown experiment"),
        (["run", "-e", "smoke", "--set", "train.kimg=-1"], "train.kimg"),
        (["run", "-e", "smoke", "--device", "cuda:0", "--dry-run"], None),
        (["sample", "/nonexistent/run"], "not a run folder"),
        (["report", "/nonexistent/results"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, tmp_path):
    res = runner.invoke(app, [*args] + (["--results", str(tmp_path)] if args[0] == "run" else []))
    if message is None:  # a dry run never touches the device
        assert res.exit_code == 0
        return
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and message in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) <= 3


def test_unavailable_cuda_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = runner.invoke(app, ["run", "-e", "smoke", "--device", "cuda", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "CUDA is not available" in res.output


def test_list_shows_generators_with_their_distribution():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    line = next(line for line in res.output.splitlines() if " dcgan " in line)
    assert "genbench" in line and "genbench_baselines.dcgan:DCGAN" in line


def test_list_says_where_each_experiment_comes_from(tmp_path, monkeypatch):
    (tmp_path / "configs" / "experiments").mkdir(parents=True)
    (tmp_path / "configs" / "experiments" / "smoke.toml").write_text('name = "smoke"\n')
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[1]: line for line in res.output.splitlines() if line.startswith("│ ")}
    assert "project" in rows["smoke"] and "packaged" in rows["default"]
    assert "hides" in res.output  # the project's smoke hides the packaged one


def test_config_show_prints_resolved_keys_and_rejects_unknown_names():
    res = runner.invoke(app, ["config", "show", "ddpm", "-e", "full", "--set", "ddpm.eta=0.5"])
    assert res.exit_code == 0, res.output
    assert "base_channels = 128" in res.output and "default 32" in res.output
    assert "eta = 0.5 " in res.output
    res = runner.invoke(app, ["config", "show", "dcgn"])
    assert res.exit_code == 2 and "did you mean 'dcgan'" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_shards_cover_the_grid_once_and_merge_in_one_report(tmp_path):
    for i in range(2):
        res = runner.invoke(
            app,
            [
                "run",
                "-e",
                "smoke",
                "--seeds",
                "0,1",
                "--shard",
                f"{i}/2",
                "--results",
                str(tmp_path),
            ],
        )
        assert res.exit_code == 0, res.output
        assert res.output.count("done  smoke-dcgan") == 1
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 0
    import pandas as pd

    df = pd.read_csv(tmp_path / "report" / "summary.csv")
    runs = df[df["row"] == "run"]
    assert sorted(runs["seed"].tolist()) == [0, 1] and set(df["status"]) == {"done"}
    bad = runner.invoke(app, ["run", "-e", "smoke", "--shard", "2/2", "--results", str(tmp_path)])
    assert bad.exit_code == 2 and "--shard" in bad.output


def test_sweep_runs_the_grid_and_shares_training_across_sampling_keys(tmp_path):
    res = runner.invoke(
        app,
        [
            "run",
            "-e",
            "smoke",
            "--sweep",
            "dcgan.lr=1e-4,2e-4",
            "--sweep",
            "dcgan.beta1=0.5,0.9",
            "--dry-run",
            "--results",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert len({line for line in res.output.split() if line.startswith("smoke-dcgan-s0-")}) == 4
    res = runner.invoke(
        app,
        [
            "run",
            "-e",
            "smoke",
            "--models",
            "denoiser",
            "--sweep",
            "denoiser.k=1,2",
            "--results",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = [
        json.loads((d / "metrics.json").read_text())
        for d in tmp_path.iterdir()
        if (d / "metrics.json").exists()
    ]
    assert len(metrics) == 2
    trained, reused = sorted(metrics, key=lambda m: m["train"]["reused_from"] is not None)
    assert (
        trained["train"]["reused_from"] is None
        and reused["train"]["reused_from"] == trained["run_id"]
    )
    assert reused["train"]["train_key"] == trained["train"]["train_key"]
    assert reused["sampling"]["k"] != trained["sampling"]["k"]


def test_bench_reports_speed_and_flops(tmp_path, smoke_results):
    out = tmp_path / "bench.json"
    res = runner.invoke(
        app,
        [
            "bench",
            "--models",
            "dcgan",
            "--resolution",
            "8",
            "--train-steps",
            "2",
            "--sample-n",
            "4",
            "--score-n",
            "0",
            "--inception-n",
            "0",
            "--results",
            str(smoke_results),
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    (m,) = rec["models"]
    assert (
        rec["matmul"]["gflops_per_s"] > 0
        and m["train_images_per_s"] > 0
        and m["train_step_gflop"] > 0
    )
    assert m["sampling"][0]["nfe"] == 1
    assert "scoring" not in rec and "inception" not in rec  # --score-n 0 --inception-n 0
    assert rec["matmul_fp32"]["dtype"] == "float32" and rec["matmul_fp32"]["gflops_per_s"] > 0
    # Smoke runs are unscored: their phases are training and sampling.
    (phase,) = [p for p in rec["phases"] if p["run_id"].startswith("smoke-dcgan-s0-")]
    assert phase["train"] > 0 and phase["sample"] > 0 and phase["score"] is None
    assert phase["total"] == pytest.approx(phase["train"] + phase["sample"], abs=1e-3)
    # Both precisions side by side (this CPU and CUDA run bf16 autocast; CPUs always can).
    assert set(m["train"]) == {"fp32", "bf16"} and m["default_precision"] in ("fp32", "bf16")
    assert all(v["images_per_s"] > 0 for v in m["train"].values())
    assert m["train_images_per_s"] == m["train"][m["default_precision"]]["images_per_s"]
    assert set(m["sampling"][0]["images_per_s"]) == {"fp32", "bf16"}
    assert "bf16/fp32" in res.output and "fp32" in res.output
    gone = runner.invoke(app, ["bench", "--models", "dcgan", "--results", str(tmp_path / "no")])
    assert gone.exit_code == 2 and "does not exist" in gone.output
    assert runner.invoke(app, ["bench", "--models", "dcgn"]).exit_code == 2


def test_bench_times_scoring_layouts_and_diffusion_precisions(tmp_path, monkeypatch):
    from genbench.bench import bench_model
    from genbench.metrics import scoring
    from tests.standin import standin_choice

    monkeypatch.setattr(scoring, "extractor_for", lambda cfg: standin_choice())
    out = tmp_path / "bench.json"
    sizes = ["--resolution", "8", "--batch-size", "4", "--train-steps", "1", "--sample-n", "2"]
    args = ["bench", "--models", "dcgan", *sizes, "--score-n", "8", "--inception-n", "4"]
    res = runner.invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    inc = rec["inception"]  # fp32 and bf16 side by side, fp32 against the fp32 matmul
    assert set(inc["images_per_s"]) == {"fp32", "bf16"} and inc["gflop_per_image"] > 0
    ips = inc["images_per_s"]
    assert inc["bf16_speedup"] == pytest.approx(ips["bf16"] / ips["fp32"], rel=0.01)
    assert inc["fp32_peak_gflops"] == pytest.approx(rec["matmul_fp32"]["gflops_per_s"])
    want = inc["gflops_per_s"]["fp32"] / inc["fp32_peak_gflops"]
    assert inc["fp32_peak_fraction"] == pytest.approx(want, rel=0.01, abs=1e-3)
    assert "Inception" in res.output and "× fp32" in res.output
    sc = rec["scoring"]
    assert set(sc["by_layout"]) == {"nchw", "channels_last"} and sc["layout"] == "channels_last"
    fids = [v["fid"] for v in sc["by_layout"].values()]
    assert fids[0] == pytest.approx(fids[1], rel=1e-4) and fids[0] > 0
    assert "channels_last" in res.output and "NCHW" in res.output
    # cddpm's sample_bf16 switch follows the column: both precisions, both samplers.
    m = bench_model(
        "cddpm",
        resolution=8,
        batch_size=4,
        train_steps=1,
        warmup_steps=0,
        sample_n=2,
        overrides={"timesteps": 10, "sample_steps": 3},
    )
    assert [s["sampler"] for s in m["sampling"]] == ["ddpm", "ddim"]
    assert [s["nfe"] for s in m["sampling"]] == [20, 6]
    assert all(set(s["images_per_s"]) == {"fp32", "bf16"} for s in m["sampling"])
