"""A new user's first run: `genbench init`, install, run, report, load_results. The
starter's sizes (N, N_ref, the copy audit's fresh images) fit its data, so the run prints
no warning and has a real-data row; a real-data row that cannot be computed is marked
skipped (or failed) with why, never left running, and every row of load_results has a model.

Training and the learned parts are shortened (the starter's sizes are kept) and a stand-in
extractor replaces Inception (slow on a CPU): the sizes and statuses are what is tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import genbench
from genbench import registry
from genbench.cli import app
from genbench.data import load_data
from genbench.metrics import scoring
from genbench.runs import real
from genbench.runs.real import real_data_row
from genbench.utils.progress import Reporter
from tests.conftest import tiny_experiment
from tests.standin import standin_choice

runner = CliRunner()
# Shorter training and learned parts; every size stays the starter's.
SHORT = {
    "train.kimg": 0.064,
    "train.eval_images": 0,
    "metrics.classifier_steps": 20,
    "metrics.copy_descriptor_steps": 20,
    "metrics.bootstrap": 10,
}


@pytest.fixture
def standin(monkeypatch, tmp_path):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())


def _install(proj: Path, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project installed (offline) into a folder of its own, made importable here."""
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, "--target", str(site), str(proj)],
        check=True,
        capture_output=True,
    )
    monkeypatch.syspath_prepend(str(site))
    registry.discover.cache_clear()  # entry points are read once per process
    monkeypatch.delenv("GENBENCH_CONFIG_PATH", raising=False)


def test_the_init_project_runs_clean(standin, tmp_path, monkeypatch):
    proj = tmp_path / "first-bench"
    assert runner.invoke(app, ["init", str(proj)]).exit_code == 0
    _install(proj, tmp_path / "site", monkeypatch)
    monkeypatch.chdir(proj)
    try:
        sets = [a for k, v in SHORT.items() for a in ("--set", f"{k}={v}")]
        ran = runner.invoke(app, ["run", "-e", "first-bench", *sets])
        assert ran.exit_code == 0, ran.output
        assert "warning" not in ran.output.lower() and "error" not in ran.output.lower(), ran.output
        report = runner.invoke(app, ["report", "--no-figures", "--no-data"])
        assert report.exit_code == 0, report.output
        assert "Real-data floor" in report.output
        df = genbench.load_results("results")
    finally:
        registry.discover.cache_clear()
    assert sorted(df["model"]) == ["dcgan", "first-bench-vae", "real"]  # sortable: all named
    assert set(df["status"]) == {"done"}
    assert (df["n"] == 200).all()
    for folder in (proj / "results").iterdir():
        if folder.is_dir() and folder.name != "report":  # .audit-seed.json sits beside the runs
            assert json.loads((folder / "status.json").read_text())["status"] == "done"
    for m in (proj / "results").glob("*/metrics.json"):
        rec = json.loads(m.read_text())
        assert rec["warnings"] == [] and rec["protocol"]["n_reference"] == 200
        assert rec["copies"]["rate"] is not None  # the audit had its fresh images


def _row(results: Path) -> dict:
    (row,) = genbench.load_results(results).to_dict("records")
    return row


def test_a_real_data_row_that_cannot_be_computed_is_skipped_with_why(standin, tmp_path):
    # 20 held-out images: the 16-image reference leaves 4, 1 each for the row and the audit.
    exp = tiny_experiment(["dcgan"], max_holdout=20)
    bundle = load_data(exp.data)
    out = real_data_row(
        bundle, exp, tmp_path, Reporter(), device=torch.device("cpu"), choice=standin_choice()
    )
    assert out is None
    row = _row(tmp_path)
    assert (row["row"], row["model"], row["status"]) == ("real", "real", "skipped")
    assert "20 images hold 1 for this row" in row["error"] and "holdout_fraction" in row["error"]
    summary = genbench.build_report(tmp_path, figures=False, data=False).summary
    assert [(f["model"], f["status"]) for f in summary.failed] == [("real", "skipped")]


def test_a_real_data_row_that_fails_is_marked_failed(standin, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(real, "score_real_data", broken)
    exp = tiny_experiment(["dcgan"])
    bundle = load_data(exp.data)
    out = real_data_row(
        bundle, exp, tmp_path, Reporter(), device=torch.device("cpu"), choice=standin_choice()
    )
    assert out is None
    row = _row(tmp_path)
    assert (row["model"], row["status"], row["error"]) == (
        "real",
        "failed",
        "RuntimeError: out of memory",
    )


def test_an_old_real_data_folder_without_a_model_is_still_a_real_row(tmp_path):
    folder = tmp_path / "demo-real-n500-9308838040"  # left by an older genbench
    folder.mkdir()
    (folder / "status.json").write_text('{"status": "running"}')
    row = _row(tmp_path)
    assert (row["row"], row["model"], row["experiment"]) == ("real", "real", "demo")
