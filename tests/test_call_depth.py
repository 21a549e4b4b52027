"""At most 8 frames from `genbench run` (the CLI command) to a metric function: a tiny
scored smoke run records the stack inside the fid unit."""

from __future__ import annotations

import inspect

from typer.testing import CliRunner

import genbench.metrics.fid as fid
from genbench.cli import app
from genbench.metrics import scoring
from tests.standin import standin_choice

MAX_FRAMES = 8


def _chain(stack: list[inspect.FrameInfo]) -> list[str]:
    """module.function of each frame from the CLI's run command down to the metric unit."""
    names = [f"{f.frame.f_globals.get('__name__')}.{f.function}" for f in stack]
    top = names.index("genbench.cli.run.run")
    return list(reversed(names[: top + 1]))


def test_genbench_run_reaches_a_metric_function_within_8_frames(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    chains: list[list[str]] = []
    real_fid_unit = fid.fid_unit

    def probe(x):  # stands in for the fid unit: the stack, then the real thing
        chains.append(_chain(inspect.stack(context=0)))
        return real_fid_unit(x)

    monkeypatch.setattr(fid, "fid_unit", probe)
    sets = [
        "metrics.enabled=true",
        'metrics.names=["fid"]',
        "metrics.classifier=false",
        "metrics.memorization=false",
        "metrics.per_class=false",
        "metrics.bootstrap=0",
        "train.kimg=0.064",
    ]
    args = ["run", "-e", "smoke", "--results", str(tmp_path / "r")]
    res = CliRunner().invoke(app, args + [a for s in sets for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    run = [c for c in chains if any(n.endswith(".execute_run") for n in c)]
    assert len(chains) == 2 and len(run) == 1  # the real-data row and the model's run
    expected = [
        "genbench.cli.run.run",
        "genbench.api.run",
        "genbench.runs.grid.run_grid",
        "genbench.runs.grid.run_point",
        "genbench.runs.steps.execute_run",
        "genbench.runs.steps.score",
        "genbench.metrics.scoring.score_set",
        "tests.test_call_depth.probe",  # the fid unit's function
    ]
    assert run[0] == expected
    assert all(len(c) <= MAX_FRAMES for c in chains), chains
