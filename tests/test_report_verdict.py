"""The report's verdict: copy flags, the real-data floor, sampling-only intervals, the
separation matrix and KID-first at small N, on synthetic run folders that carry the
scoring side's ``copies`` and ``bootstrap`` entries."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genbench.report import write_report
from genbench.report.verdict import FLOOR_MARK, welch_ci95
from tests.test_report import protocol

B = 200
COMMON = np.random.default_rng(0).normal(size=B)  # the shared resampling: replicates pair up


def reps(value: float, sd: float, own_seed: int) -> list[float]:
    own = np.random.default_rng(own_seed).normal(size=B)
    return [float(x) for x in value + sd * (0.9 * COMMON + 0.3 * own)]


def make(
    root: Path,
    model: str,
    seed: int | None,
    fid: float,
    *,
    n: int = 4096,
    flagged: bool = False,
    copy_rate: float = 0.0,
    sd: float = 0.5,
    old: bool = False,
) -> Path:
    rid = f"v-{model}-s{seed}"
    rd = root / rid
    rd.mkdir(parents=True)
    kid = fid / 1000
    real = model == "real"
    scores: dict = {"fid": fid, "kid": {"mean": kid, "std": 0.001}}
    m: dict = {
        "run_id": rid,
        "experiment": "v",
        "model": model,
        "seed": seed,
        "sampling": {"sampler": "real-data" if real else "direct", "nfe": 1, "n": n},
        "protocol": protocol(n),
        "scores": scores,
    }
    if old:
        scores["memorization"] = 0.09
    else:
        scores["copy_rate"] = copy_rate
        ci = [max(0.0, copy_rate - 0.02), min(1.0, copy_rate + 0.02)]
        m["copies"] = {
            "rate": copy_rate,
            "rate_ci95": ci,
            "n_copies": round(copy_rate * 500),
            "n_samples": 500,
            "heldout_rate": 0.002,
            "p_value": 1e-9 if flagged else 0.8,
            "flagged": flagged,
            "pairs": [
                {
                    "sample": 3,
                    "train_index": 1204,
                    "transform": "mirror, shift (+1, -2) px",
                    "ncc": 0.998,
                    "ratio": 0.1,
                    "copy": flagged,
                }
            ],
            "image": "copies.png",
        }
        own = len(model) * 31 + (seed or 0) * 7 + 1
        f, k = reps(fid, sd, own), reps(kid, sd / 1000, own + 500)
        (rd / "bootstrap.json").write_text(
            json.dumps({"n": B, "seed": 0, "n_samples": n, "fid": f, "kid": k})
        )
        m["bootstrap"] = {
            "n": B,
            "seed": 0,
            "fid_ci95": [float(np.quantile(f, 0.025)), float(np.quantile(f, 0.975))],
            "kid_ci95": [float(np.quantile(k, 0.025)), float(np.quantile(k, 0.975))],
            "file": "bootstrap.json",
            "kind": "sampling only",
        }
        Image.fromarray(np.full((16, 32), 128, np.uint8)).save(rd / "copies.png")
    (rd / "status.json").write_text(json.dumps({"status": "done"}))
    (rd / "metrics.json").write_text(json.dumps(m))
    return rd


def build(root: Path, *, n: int = 4096) -> Path:
    make(root, "real", None, 5.0, n=n)
    make(root, "good", 0, 10.0, n=n)
    make(root, "good", 1, 10.4, n=n)
    make(root, "close", 0, 10.1, n=n)
    make(root, "close", 1, 10.6, n=n)
    make(root, "bad", 0, 30.0, n=n)
    make(root, "bad", 1, 30.6, n=n)
    make(root, "single", 0, 20.0, n=n)
    make(root, "copier", 0, 4.0, n=n, flagged=True, copy_rate=0.96)
    make(root, "floorish", 0, 5.1, n=n)
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = build(tmp_path_factory.mktemp("verdict") / "results")
    return write_report(root, plots=False, grids=True, html=True, data=False)


def _means(report) -> pd.DataFrame:
    t = report.summary.table
    return t[t["row"] == "mean"].set_index("model")


def test_a_flagged_run_is_never_best_and_the_headline_names_it(report):
    means = _means(report)
    assert bool(means.loc["copier", "flagged"]) is True
    assert means.loc["copier", "fid"] < means.drop("copier")["fid"].min()  # lowest FID ...
    assert means.loc["copier", "best"] == ""  # ... yet best in no column
    assert "fid" in means.loc["floorish", "best"].split(";")
    assert means.index[-1] == "copier"  # ranked last, after every unflagged model
    md = (report.out_dir / "summary.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("**v: protocol"))
    assert head.index("floorish") < head.index("good")  # ranks the unflagged runs
    assert "Flagged for copying training images, not ranked: copier ⚠copies (copy rate 0.96)" in (
        head
    )
    assert "copier ⚠copies" in md and "**4 " not in md  # marked, never bold
    assert "copy rate" in md and "memorization" not in md
    assert "| 0.96 [0.94, 0.98] |" in md  # the copy rate's own interval with one seed
    assert "copier ⚠copies" in (report.out_dir / "summary.tex").read_text()


def test_floor_mark_for_runs_indistinguishable_from_real_data(report):
    means = _means(report)
    assert bool(means.loc["floorish", "at_floor"]) and means.loc["floorish", "audit"] == FLOOR_MARK
    assert not means.loc[["good", "bad", "single"], "at_floor"].astype(bool).any()
    md = (report.out_dir / "summary.md").read_text()
    assert "floorish 5.1 [" in md and FLOOR_MARK in md


def test_one_seed_shows_the_sampling_only_interval(report, tmp_path):
    md = (report.out_dir / "summary.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| single | 1 |"))
    assert "20 [" in row and "] sampling only" in row and "± n/a" not in row.split("|")[3]
    df = pd.read_csv(report.out_dir / "summary.csv")
    single = df[(df["row"] == "mean") & (df["model"] == "single")].iloc[0]
    assert single["fid_ci95_sampling_lo"] < 20 < single["fid_ci95_sampling_hi"]
    good = df[(df["row"] == "mean") & (df["model"] == "good")].iloc[0]
    # Two seeds: the Student-t interval in the table, the sampling interval in the CSV too.
    assert good["fid_ci95"] > 0 and good["fid_ci95_sampling_lo"] < good["fid"]
    assert re.search(r"\| good \| 2 \| 10\.2 ± \d", md)
    assert "sampling only" in (report.out_dir / "report.html").read_text()


def test_separation_matrix_separates_clear_pairs_only(report):
    data = json.loads((report.out_dir / "summary.json").read_text())
    (group,) = data["groups"]
    assert group["lead_metric"] == "fid" and set(group["separation"]) == {"fid", "kid"}
    mat = group["separation"]["fid"]["matrix"]
    assert mat["good"]["bad"] == "beats" and mat["bad"]["good"] == "beaten"
    assert mat["good"]["close"] == "not separated"  # overlapping seed intervals
    assert mat["single"]["bad"] == "ahead (sampling only)"  # one seed: never "beats"
    assert mat["copier ⚠copies"]["bad"] == "flagged"
    claims = {p["claim"] for p in group["separation"]["fid"]["pairs"]}
    assert "good beats bad" in claims
    assert "single is ahead of bad on sampling noise only (1 training seed)" in claims
    assert not any("copier" in c and "beats" in c for c in claims)
    md = (report.out_dir / "summary.md").read_text()
    assert "Separation on FID" in md
    html = (report.out_dir / "report.html").read_text()
    assert 'class="separation"' in html


def test_welch_interval_needs_two_seeds_a_side():
    assert welch_ci95([1.0], [2.0, 3.0]) is None
    lo, hi = welch_ci95([1.0, 1.2, 0.9], [5.0, 5.3, 4.8])
    assert hi < 0 and lo < hi


def test_small_n_leads_with_kid(tmp_path):
    root = build(tmp_path / "small", n=512)
    rep = write_report(root, plots=False, grids=False, html=False, data=False)
    (g,) = rep.summary.groups
    assert g.lead == "kid" and g.separation["kid"]["matrix"]["good"]["bad"] == "beats"
    md = (tmp_path / "small" / "report" / "summary.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model | seeds |"))
    assert header.index("KID") < header.index("FID")
    assert "KID (lower is better, unbiased at this small N; FID beside it)" in md
    assert "Separation on KID" in md


def test_copy_audit_images_and_pairs_are_in_the_report(report):
    names = [Path(f).name for f in report.files if f.startswith("grids/")]
    assert any(n.endswith("v-copier-s0-copies.png") for n in names), names
    html = (report.out_dir / "report.html").read_text()
    assert "copy audit of copier seed 0 ⚠ FLAGGED for copying" in html
    assert "sample 3 ~ training 1204 (mirror, shift (+1, -2) px), NCC 0.998" in html


def test_old_runs_without_the_new_fields_still_report(tmp_path):
    root = tmp_path / "old"
    make(root, "real", None, 5.0, old=True)
    make(root, "gan", 0, 10.0, old=True)
    make(root, "gan", 1, 12.0, old=True)
    make(root, "vae", 0, 20.0, old=True)
    rep = write_report(root, plots=False, grids=False, html=False, data=False)
    md = (root / "report" / "summary.md").read_text()
    assert "memorization" not in md and "copy rate ↓" not in md and "gan ⚠copies" not in md
    assert "| vae | 1 | 20 ± n/a |" in md  # no bootstrap: no sampling interval to show
    assert rep.summary.groups[0].separation["fid"]["matrix"]["gan"]["vae"] == "not separated"


def test_a_copy_of_the_results_reports_byte_identical(report, tmp_path):
    src = report.out_dir.parent
    copy = tmp_path / "elsewhere"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("report"))
    rep = write_report(copy, plots=False, grids=True, html=True, data=False)
    for name in ("summary.csv", "summary.json", "summary.md", "summary.tex", "report.html"):
        assert (rep.out_dir / name).read_bytes() == (report.out_dir / name).read_bytes(), name


def test_plots_mark_flagged_runs_and_draw_sampling_intervals(report, tmp_path):
    root = report.out_dir.parent
    rep = write_report(root, tmp_path / "p", grids=False, html=False, data=False)
    assert rep.notes == [], rep.notes
    bars = next(f for f in rep.files if f.startswith("plots/metrics-") and f.endswith(".svg"))
    svg = (tmp_path / "p" / bars).read_text()
    assert "<pattern" in svg  # the flagged run's bar is hatched
    from genbench.report.plots import write_plots

    figures, _ = write_plots(rep.summary, tmp_path / "q")
    caption = next(f.caption for f in figures if f.png.startswith("plots/metrics-"))
    assert "hatched red bars: flagged for copying" in caption and "sampling only" in caption
