"""Quality vs training compute in the report: who leads at each budget (with the final
verdict's separation rules), where the leader changes, and which curves have not
converged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genbench.report import curves, write_report
from tests.test_report import make_run, sc

FRACTIONS = (0.125, 0.25, 0.5)


def _boot(folder: Path, value: float, *, n_samples: int, seed: int) -> None:
    # Tight replicates around the value: separated wherever two values differ by > 0.01.
    reps = value + np.random.default_rng(seed).normal(0, 0.002, 200)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"n": 200, "seed": 0, "n_samples": n_samples, "kid": reps.tolist()}
    (folder / "bootstrap.json").write_text(json.dumps(data))


def _curve_run(root: Path, model: str, kids: list[float], seed: int) -> Path:
    *early, final = kids
    snaps = [
        {
            "step": i + 1,
            "kimg": f,
            "flops": f * 1e12,
            "train_seconds": f * 10,
            "n": 8,
            "scores": {"kid": {"mean": k, "std": 0.0}},
            "images": f"snapshots/step-{i + 1:09d}",
        }
        for i, (f, k) in enumerate(zip(FRACTIONS, early, strict=True))
    ]
    rd = make_run(
        root, model, 0, sc(final * 1000) | {"kid": {"mean": final, "std": 0.0}},
        experiment="curvy", train_s=10.0, flops=1e12, snapshots=snaps,
    )  # fmt: skip
    for i, s in enumerate(snaps):
        _boot(rd / s["images"], s["scores"]["kid"]["mean"], n_samples=8, seed=seed + i)
    _boot(rd, final, n_samples=16, seed=seed + 9)
    return rd


def test_leaders_crossovers_and_unconverged_curves(tmp_path):
    root = tmp_path / "results"
    make_run(root, "real", None, sc(5.0, 0.99), experiment="curvy", run_id="curvy-real-n16-x")
    # fast leads early and flattens; slow overtakes at the end and is still falling steeply.
    _curve_run(root, "fast", [0.100, 0.060, 0.050, 0.048], seed=1)
    _curve_run(root, "slow", [0.300, 0.120, 0.052, 0.020], seed=20)

    report = write_report(root, grids=False, html=True)
    (g,) = report.summary.groups
    c = g.curves
    assert c is not None and c.budget_axis == "kimg"
    assert [b.leader for b in c.budgets] == ["fast", "fast", None, "slow"]
    assert c.budgets[2].claim == "fast and slow: not separated"
    assert c.crossovers == [
        "fast leads up to 0.25 kimg, slow from 1 kimg (the curves cross in between)"
    ]
    assert c.crossings == ["slow passes fast between 0.5 kimg and 1 kimg"]
    assert list(c.not_converged) == ["slow"]  # 0.052 -> 0.020 in one doubling; fast: 4%

    md = (root / "report" / "summary.md").read_text()
    assert "## Who leads at each budget" in md and "slow: not converged" in md
    assert "Across budgets (KID; the budget is matched in training images seen)" in md
    html = (root / "report" / "report.html").read_text()
    assert "who leads at each budget" in html
    js = json.loads((root / "report" / "summary.json").read_text())
    assert js["groups"][0]["curves"]["crossovers"] == c.crossovers
    assert list((root / "report" / "plots").glob("compute-*.png"))


def test_a_run_without_snapshots_has_no_curve(tmp_path):
    root = tmp_path / "results"
    make_run(root, "gan", 0, sc(10.0), experiment="flat")
    (g,) = write_report(root, grids=False, html=False, plots=False).summary.groups
    assert g.curves is None


def test_budget_axis_follows_the_experiment():
    assert curves.budget_axis({"train": {"budget": "tflop"}}) == "flops"
    assert curves.budget_axis({"train": {"budget": "seconds"}}) == "seconds"
    assert curves.budget_axis({"train": {}}) == "kimg"


def _gan_log(rd: Path, d_real: float, d_fake: float) -> None:
    recs = [
        {"step": s, "kimg": s * 0.016, "d_real": 0.6 if s < 8 else d_real, "d_fake": d_fake}
        for s in range(1, 11)
    ]
    (rd / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_a_discriminator_that_has_won_is_noted(tmp_path):
    root = tmp_path / "results"
    _gan_log(make_run(root, "won", 0, sc(10.0)), 0.95, 0.05)
    _gan_log(make_run(root, "balanced", 0, sc(10.0)), 0.95, 0.3)  # D(fake) not below 0.1
    report = write_report(root, grids=False, html=False, plots=False)
    (note,) = report.notes
    assert note.startswith("fake-won-s0-") and "the discriminator has won" in note
    assert "## Training notes" in (root / "report" / "summary.md").read_text()


def test_a_model_alone_in_its_group_leads_nothing(tmp_path):
    root = tmp_path / "results"
    _curve_run(root, "alone", [0.3, 0.2, 0.1, 0.09], seed=3)
    (g,) = write_report(root, grids=False, html=False, plots=False).summary.groups
    assert g.curves is not None and all(b.leader is None for b in g.curves.budgets)
    assert "leads" not in curves.markdown(g.curves) and "leads" not in curves.sentence(g.curves)
