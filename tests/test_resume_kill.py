"""A run SIGKILLed mid-training and resumed ends with exactly the weights of an
uninterrupted run (CPU, deterministic), and a finished run is never re-trained."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# ~50 steps of a narrow DCGAN on 8x8 digits (a few seconds), a checkpoint every 2 steps.
ARGS = [
    "run",
    "-e",
    "smoke",
    "--device",
    "cpu",
    "--set",
    "data.resolution=8",
    "--set",
    "dcgan.base_channels=8",
    "--set",
    "train.kimg=1.6",
    "--set",
    "train.checkpoint_kimg=0.064",
    "--set",
    "train.deterministic=true",
]
TOTAL_STEPS = 50


def genbench(results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "genbench", *ARGS, "--results", str(results), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def final_modules(results: Path) -> tuple[Path, dict]:
    (run,) = results.glob("smoke-dcgan-s0-*")
    last = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(last, map_location="cpu", weights_only=True)
    return last, state["model"]["modules"]


def test_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    ref = genbench(reference)  # runs alongside; both are deterministic
    proc = genbench(killed)
    deadline = time.monotonic() + 120
    while not list(killed.glob("*/checkpoints/step-*.pt")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    (run,) = killed.glob("smoke-dcgan-s0-*")
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    assert not (run / "metrics.json").exists()
    steps = [int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt")]
    assert max(steps) < TOTAL_STEPS  # killed mid-training

    resumed_out = finish(genbench(killed, "--resume"))
    finish(ref)
    assert json.loads((run / "status.json").read_text())["status"] == "done", resumed_out
    last_k, resumed = final_modules(killed)
    last_r, uninterrupted = final_modules(reference)
    assert last_k.name == last_r.name == f"step-{TOTAL_STEPS:09d}.pt"
    assert resumed.keys() == uninterrupted.keys() == {"G", "D"}
    for net in resumed:
        for k, t in resumed[net].items():
            assert torch.equal(t, uninterrupted[net][k]), f"{net}.{k} differs after resume"
    logged = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == TOTAL_STEPS  # no step logged twice

    # A finished run is skipped, not re-trained, even with --resume.
    mtime = last_k.stat().st_mtime_ns
    out = finish(genbench(killed, "--resume"))
    assert "skipped" in out and last_k.stat().st_mtime_ns == mtime
