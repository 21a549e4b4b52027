"""torchrun with 2 CPU processes (gloo): ranks stay identical and outputs match the single-process layout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genbench.metrics import inception

ROOT = Path(__file__).resolve().parent.parent


def torchrun(args, tmp_path, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *args,
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)
def test_two_ranks_hold_identical_weights(tmp_path):
    res = torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (
        r0["steps"] == r1["steps"] == 10 and r0["images_seen"] == 160
    )  # global batch and budget unchanged
    for k, t in r0["state"].items():
        assert torch.equal(t, r1["state"][k]), k
    # Training moved the weights (the ranks are not equal merely by being untouched).
    from genbench import registry
    from genbench.contract import DataSpec

    torch.manual_seed(0)
    cls = registry.load("dcgan")
    fresh = cls(
        spec=DataSpec(resolution=8, channels=1), config=cls.Config(), device=torch.device("cpu")
    )
    w0 = fresh.G.state_dict()["net.0.weight"]
    assert not torch.equal(w0, r0["state"]["G.net.0.weight"])


@pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)
def test_genbench_run_under_torchrun_matches_single_process_layout(tmp_path, monkeypatch):
    multi, single = tmp_path / "multi", tmp_path / "single"
    scored = inception.fidhelper_file() is not None
    # With the offline Inception, FID too: the ranks split the feature extraction.
    sets = ["metrics.enabled=true", 'metrics.names=["fid", "kid"]', "metrics.classifier=false"]
    sets += ["metrics.memorization=false"]
    extra = [arg for kv in sets for arg in ("--set", kv)] if scored else []
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(inception.ENV_OFFLINE, "1")
    res = torchrun(["-m", "genbench", "run", "-e", "smoke", "--results", str(multi), *extra], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    res1 = subprocess.run(
        [sys.executable, "-m", "genbench", "run", "-e", "smoke", "--results", str(single), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res1.returncode == 0, res1.stderr[-2000:]
    (m,) = [p for p in multi.iterdir() if p.name.startswith("smoke-dcgan")]
    (s,) = [p for p in single.iterdir() if p.name.startswith("smoke-dcgan")]
    assert m.name == s.name  # same config, same run id
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(m) == files(s)
    mm = json.loads((m / "metrics.json").read_text())
    assert mm["train"]["images_seen"] == 256 and mm["environment"]["world_size"] == 2
    assert json.loads((m / "status.json").read_text())["status"] == "done"
    if scored:
        ms = json.loads((s / "metrics.json").read_text())
        # Data-parallel training sums gradients in another order, so the samples (and the
        # scores) match the single process's closely, not bit for bit; test_metrics checks
        # that the split features equal one process's exactly.
        assert mm["scores"]["fid"] > 0
        assert mm["scores"]["fid"] == pytest.approx(ms["scores"]["fid"], rel=0.02)
        assert mm["scores"]["kid"]["mean"] == pytest.approx(ms["scores"]["kid"]["mean"], rel=0.05)
        assert "features on 2 ranks" in res.stdout + res.stderr
