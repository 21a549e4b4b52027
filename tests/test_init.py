"""`genbench init` writes a project whose plugin installs and whose experiment runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genbench.cli import app

runner = CliRunner()


def _genbench(args: list[str], *, cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GENBENCH_CONFIG_PATH",)}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "genbench", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_init_project_installs_and_runs_on_digits(tmp_path):
    proj = tmp_path / "my-bench"
    res = runner.invoke(app, ["init", str(proj)])
    assert res.exit_code == 0, res.output
    for f in ("pyproject.toml", "README.md", ".gitignore", "my_bench/__init__.py"):
        assert (proj / f).is_file(), f
    experiment = (proj / "configs" / "experiments" / "my-bench.toml").read_text()
    assert 'source = "digits"' in experiment and 'models = ["my-bench-vae", "dcgan"]' in experiment

    site = tmp_path / "site"  # a real, offline install of the generated plugin package
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *offline, "--target", str(site), str(proj)],
        check=True,
        capture_output=True,
    )
    listed = _genbench(["list"], cwd=proj, site=site)
    assert listed.returncode == 0, listed.stderr
    assert "my-bench-vae" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith("│ my-bench "))
    assert "project" in row

    tiny = ["--set", "train.kimg=0.128", "--set", "sample.n=16", "--set", "metrics.enabled=false"]
    ran = _genbench(["run", "-e", "my-bench", *tiny], cwd=proj, site=site)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    runs = sorted((proj / "results").glob("my-bench-*"))
    assert [r.name.split("-s0-")[0] for r in runs] == ["my-bench-dcgan", "my-bench-my-bench-vae"]
    for r in runs:
        assert json.loads((r / "status.json").read_text())["status"] == "done"
        assert len(list((r / "samples").glob("*.png"))) == 16
    log = [json.loads(x) for x in (runs[1] / "train_log.jsonl").read_text().splitlines()]
    assert any("test_loss" in rec for rec in log)  # the starter's evaluate() ran

    shown = _genbench(["config", "show", "my-bench-vae"], cwd=proj, site=site)
    assert "latent_dim = 16" in shown.stdout and "size of the latent code" in shown.stdout


def test_init_never_overwrites_and_checks_the_name(tmp_path):
    res = runner.invoke(app, ["init", str(tmp_path / "proj")])
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, ["init", str(tmp_path / "proj")])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["init", str(tmp_path / "x"), "--name", "My Bench"])
    assert bad.exit_code == 2 and "lowercase letters" in bad.output
    taken = runner.invoke(app, ["init", str(tmp_path / "y"), "--name", "torch"])
    assert taken.exit_code == 2 and "already importable" in taken.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
