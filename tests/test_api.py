"""The Python API (genbench.api, re-exported from genbench): the functions the CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import genbench
from genbench.cli import app
from genbench.metrics import scoring
from genbench.storage.folder import read_sample_set
from genbench.utils.errors import ConfigError, GenbenchError
from tests.standin import standin_choice

# The smoke experiment with scoring on (a stand-in extractor: real Inception is slow here).
SCORED = {
    "train.kimg": 0.064,
    "sample.n": 24,
    "sample.batch_size": 12,
    "metrics.enabled": True,
    "metrics.classifier_steps": 30,
    "metrics.copy_descriptor_steps": 40,
    "metrics.bootstrap": 20,
}
EXPERIMENT = """name = "apitest"
models = ["dcgan"]
[data]
source = "digits"
resolution = 16
[train]
kimg = 0.064
batch_size = 32
eval_images = 0
[sample]
n = 24
batch_size = 12
[metrics]
classifier_steps = 30
copy_descriptor_steps = 40
bootstrap = 20
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    root = tmp_path_factory.mktemp("api")
    exp = root / "apitest.toml"
    exp.write_text(EXPERIMENT)
    results = root / "results"
    outcomes = genbench.run(exp, seeds=[0, 1], results=results)
    yield exp, results, outcomes
    mp.undo()


def test_run_returns_outcomes_and_load_results_one_row_per_run(scored):
    _, results, outcomes = scored
    assert [(o.model, o.seed, o.status) for o in outcomes] == [
        ("dcgan", 0, "done"),
        ("dcgan", 1, "done"),
    ]
    df = genbench.load_results(results)
    assert sorted(df["row"]) == ["real", "run", "run"]  # the real-data floor is a row too
    runs = df[df["row"] == "run"]
    assert sorted(runs["seed"]) == [0, 1] and set(runs["status"]) == {"done"}
    assert set(runs["run_id"]) == {o.run_id for o in outcomes}
    (protocol,) = set(df["protocol"])  # one fingerprint: every row is comparable
    assert len(protocol) > 0
    metrics = json.loads((Path(runs["run_dir"].iloc[0]) / "metrics.json").read_text())
    assert runs["fid"].iloc[0] == pytest.approx(metrics["scores"]["fid"])
    assert metrics["protocol"]["fingerprint"] == protocol


def test_the_cli_runs_the_same_runs(scored):
    exp, results, outcomes = scored
    res = CliRunner().invoke(
        app, ["run", "-e", str(exp), "--seeds", "0,1", "--results", str(results)]
    )
    assert res.exit_code == 0, res.output
    for o in outcomes:  # same resolved configs, same run ids: finished runs are skipped
        assert f"skipped  {o.run_id}" in res.output
    planned = genbench.plan(exp, seeds=[0, 1])
    assert [p.run_id for p in planned] == [o.run_id for o in outcomes]


def test_score_a_folder_or_a_tensor_reproduces_the_runs_numbers(scored, monkeypatch):
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    exp, _, outcomes = scored
    run_dir = outcomes[0].run_dir
    saved = json.loads((run_dir / "metrics.json").read_text())
    by_folder = genbench.score(run_dir / "samples", ref=str(exp))
    assert by_folder["scores"]["fid"] == pytest.approx(saved["scores"]["fid"], rel=1e-6)
    assert by_folder["protocol"]["n_reference"] == saved["protocol"]["n_reference"]

    files, manifest = read_sample_set(run_dir / "samples")
    from genbench.storage.images import read_images

    uint8 = read_images(files)
    as_float = uint8.float() / 255  # what Generator.sample returns
    by_tensor = genbench.score(as_float, ref=str(exp), labels=manifest.get("labels"))
    assert by_tensor["scores"]["fid"] == pytest.approx(saved["scores"]["fid"], rel=1e-6)
    assert by_tensor["scores"]["kid"] == pytest.approx(saved["scores"]["kid"], rel=1e-6)
    assert by_tensor["protocol"]["fingerprint"] == saved["protocol"]["fingerprint"]


def test_build_report_writes_tables_from_the_runs(scored, tmp_path):
    _, results, _ = scored
    rep = genbench.build_report(results, out=tmp_path / "rep", figures=False)
    assert rep.out_dir == tmp_path / "rep" and (tmp_path / "rep" / "summary.csv").is_file()
    means = rep.table[rep.table["row"] == "mean"]
    assert list(means["model"]) == ["dcgan"] and int(means["n_seeds"].iloc[0]) == 2


def test_overrides_and_sweeps_as_mappings_equal_the_cli_strings():
    as_map = genbench.load_experiments(
        "smoke",
        models=["dcgan", "ddpm"],
        overrides={"train.kimg": 0.5, "ddpm.schedule": "cosine"},
        sweep={"ddpm.sample_steps": [10, 20]},
    )
    as_str = genbench.load_experiments(
        "smoke",
        models=["dcgan", "ddpm"],
        overrides=["train.kimg=0.5", "ddpm.schedule=cosine"],
        sweep=["ddpm.sample_steps=10,20"],
    )
    assert as_map == as_str and len(as_map) == 2
    assert [e.model["ddpm"]["sample_steps"] for e in as_map] == [10, 20]
    assert as_map[0].train.kimg == 0.5 and as_map[0].models == ["dcgan", "ddpm"]


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        genbench.plan("nope")
    with pytest.raises(ConfigError, match="seeds"):
        genbench.plan("smoke", seeds=["0"])  # type: ignore[list-item]
    with pytest.raises(GenbenchError, match="C = 1 or 3"):
        genbench.score(torch.zeros(2, 2, 8, 8), ref="digits")
    with pytest.raises(GenbenchError, match="2 for 3 images"):
        genbench.score(torch.zeros(3, 1, 8, 8), ref="digits", labels=[0, 1])
    with pytest.raises(GenbenchError, match="does not exist"):
        genbench.load_results(tmp_path / "missing")
