"""`genbench report` on fake run folders (fast, deterministic), report.html in headless
Chromium, and once on a real smoke run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from PIL import Image
from typer.testing import CliRunner

from genbench.cli import app
from genbench.metrics.protocol import fingerprint
from genbench.report import collect_runs, write_report
from genbench.report.plots import pareto_front

runner = CliRunner()
T975_DF2 = 4.302652729749462  # Student-t 97.5% quantile, 2 degrees of freedom
EVIL_CLASS = "<b>cat</b> & dog"
EVIL_ERROR = "<script>alert(1)</script> boom at step 3"


# -- fake run folders ----------------------------------------------------------------------
def protocol(n: int = 16) -> dict:
    p = {
        "torch_fidelity": "0.4.0",
        "extractor": "stand-in",
        "weights_sha256": "ab" * 32,
        "feature_layer": "2048",
        "dtype": "float32",
        "n_generated": n,
        "n_reference": n,
        "reference": {"dataset": "digits", "split": "train", "split_method": "random"},
        "resolution": 8,
        "channels": 1,
        "channel_handling": "grayscale replicated to RGB for the extractor",
        "settings": {"kid_subsets": 10},
        "weights_source": "/somewhere/absolute/weights.pt",
        "extract_seconds": 1.234,
    }
    p["fingerprint"] = fingerprint(p)
    return p


def png(path: Path, rng: np.random.Generator, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def make_run(
    root: Path,
    model: str,
    seed: int | None,
    scores: dict,
    *,
    experiment: str = "fake",
    n: int = 16,
    status: str = "done",
    error: str | None = None,
    generator: dict | None = None,
    nfe: int = 1,
    train_s: float = 1.0,
    flops: float = 1e12,
    img_s: float = 100.0,
    classes: bool = False,
    snapshots: list | None = None,
    cfg_sweep: list | None = None,
    mix: bool = False,
    run_id: str | None = None,
) -> Path:
    key = json.dumps([model, seed, n, generator], sort_keys=True).encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:4], "little"))
    rid = run_id or f"{experiment}-{model}-s{seed}-{hashlib.sha256(key).hexdigest()[:10]}"
    rd = root / rid
    rd.mkdir(parents=True)
    # A timestamp that differs per folder: it must never reach the tables.
    st = {"status": status, "time": f"2026-01-0{1 + (seed or 0) % 9}T00:00:00"}
    if error:
        st["error"] = error
    (rd / "status.json").write_text(json.dumps(st))
    if model == "real":
        m = {
            "run_id": rid,
            "experiment": experiment,
            "model": "real",
            "seed": None,
            "sampling": {"sampler": "real-data", "nfe": 0, "n": n, "images_per_s": None},
            "scores": scores,
            "protocol": protocol(n),
        }
        (rd / "metrics.json").write_text(json.dumps(m))
        return rd
    cfg = {
        "experiment": experiment,
        "model": model,
        "seed": seed,
        "data": {"source": "digits", "resolution": 8, "split": "random"},
        "train": {"kimg": 1.0, "batch_size": 16},
        "sample": {"n": n},
        "generator": generator or {"lr": 0.001},
    }
    (rd / "config.toml").write_text(tomli_w.dumps(cfg))
    log = [
        {
            "step": s,
            "kimg": s * 0.016,
            "elapsed_s": s * 0.1,
            "images_per_s": 160.0,
            "loss_d": 1.0 / s,
            "loss_g": 0.5 + s / 100,
        }
        for s in range(1, 6)
    ]
    (rd / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"torn')
    if status != "done":
        return rd
    (rd / "metrics.json").write_text(
        json.dumps(
            {
                "run_id": rid,
                "experiment": experiment,
                "model": model,
                "seed": seed,
                "parameters_total": 2_500_000,
                "train": {
                    "steps": 5,
                    "images_seen": 1000,
                    "train_seconds": train_s,
                    "images_per_s": 1000 / train_s,
                    "flops_per_step": flops / 5,
                    "flops_total": flops,
                    "stopped_by": "budget",
                },
                "sampling": {"sampler": "direct", "nfe": nfe, "n": n, "images_per_s": img_s},
                "environment": {"device": "cpu"},
                "scores": scores,
                "protocol": protocol(n),
                "warnings": ["FID at small N is biased upward"],
            }
        )
    )
    labels = [i % 3 for i in range(n)]
    for i in range(n):
        png(rd / "samples" / f"{i:06d}.png", rng)
    manifest = {"n": n, "condition": "classes" if classes else "none"}
    if classes:
        manifest |= {"labels": labels, "class_names": [EVIL_CLASS, "b", "c"]}
    (rd / "samples" / "manifest.json").write_text(json.dumps(manifest))
    png(rd / "memorization.png", rng, size=20)
    if mix:
        png(rd / "grids" / "mix-0_1-seed0.png", rng, size=30)
    if snapshots:
        (rd / "snapshots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in snapshots))
    if cfg_sweep:
        (rd / "cfg_sweep.json").write_text(json.dumps(cfg_sweep))
    return rd


def sc(fid: float, precision: float = 0.5, **kw) -> dict:
    return {
        "fid": fid,
        "kid": {"mean": fid / 1000, "std": 0.001},
        "precision": precision,
        "recall": 0.4,
        **kw,
    }


def build_results(root: Path) -> Path:
    """Real row; gan x 3 seeds; cgan x 1 seed (conditional, better precision); a
    2x2 sweep of 'sweep'; a run under another protocol (N=32); a failed run."""
    root.mkdir(parents=True, exist_ok=True)
    make_run(root, "real", None, sc(5.0, 0.99), run_id="fake-real-n16-0000000000")
    snaps = [
        {"step": 1, "kimg": 0.2, "flops": 2e11, "n": 8, "scores": {"fid": 300.0, "kid": 0.3}},
        {"step": 3, "kimg": 0.6, "flops": 6e11, "n": 8, "scores": {"fid": 150.0, "kid": 0.15}},
    ]
    for s, fid in zip((0, 1, 2), (10.0, 12.0, 14.0), strict=True):
        make_run(
            root,
            "gan",
            s,
            sc(fid, 0.3),
            train_s=1.0 + s,
            snapshots=snaps if s == 0 else None,
            mix=s == 0,
        )
    make_run(
        root,
        "cgan",
        0,
        sc(20.0, 0.9, class_consistency=0.8, fid_class_mean=40.0),
        nfe=10,
        classes=True,
        cfg_sweep=[
            {"scale": 1.0, "scores": {"fid": 25.0, "class_consistency": 0.6}},
            {"scale": 3.0, "scores": {"fid": 22.0, "class_consistency": 0.9}},
        ],
    )
    for a in (1, 2):
        for b in ("<x>", "y"):
            make_run(root, "sweep", 0, sc(30.0 + a * 10 + (b == "y")), generator={"a": a, "b": b})
    make_run(root, "gan", 7, sc(99.0), n=32)  # another protocol: never averaged with N=16
    make_run(root, "dcgan", 0, {}, status="failed", error=EVIL_ERROR)
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return build_results(tmp_path_factory.mktemp("fake") / "results")


@pytest.fixture(scope="module")
def full_report(results):
    """The complete report (plots, grids, html) of the fake results, written once."""
    return write_report(results)


def tables_only(results: Path, out: Path | None = None):
    return write_report(results, out, plots=False, grids=False, html=False, data=False)


def csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv", keep_default_na=True)


# -- tables ----------------------------------------------------------------------------------
def test_mean_and_student_t_interval_over_seeds(results, tmp_path):
    tables_only(results, tmp_path)
    df = csv(tmp_path)
    gan = df[(df["row"] == "mean") & (df["model"] == "gan") & (df["n_seeds"] == 3)].iloc[0]
    assert gan["fid"] == pytest.approx(12.0)
    assert gan["fid_ci95"] == pytest.approx(T975_DF2 * 2.0 / math.sqrt(3))  # s = 2
    assert gan["seeds"] == "0;1;2"
    # The per-seed values are kept as rows of their own.
    per_seed = df[(df["row"] == "run") & (df["model"] == "gan") & (df["n"] == 16)]
    assert sorted(per_seed["fid"]) == [10.0, 12.0, 14.0]
    # One seed: no interval, and the tables say so instead of showing a bare number.
    cgan = df[(df["row"] == "mean") & (df["model"] == "cgan")].iloc[0]
    assert cgan["n_seeds"] == 1 and pd.isna(cgan["fid_ci95"])
    md = (tmp_path / "summary.md").read_text()
    # (N = 16 < 2048: KID leads, FID beside it.)
    assert re.search(r"\| cgan \| 1 \| 0.02 ± n/a \| 20 ± n/a \|", md), md
    assert "12 ± 5.0" in md


def test_best_values_follow_each_metrics_direction_and_skip_the_real_row(results, tmp_path):
    tables_only(results, tmp_path)
    df = csv(tmp_path)
    main = df[(df["row"] == "mean") & (df["comparable"] == True)]  # noqa: E712
    best = dict(
        zip(main["model"] + main["variant"].fillna(""), main["best"].fillna(""), strict=True)
    )
    assert "fid" in best["gan"].split(";")  # lowest FID (12), though real data has 5
    assert "precision" in best["cgan"].split(";")  # highest precision
    assert "nfe" not in best["cgan"].split(";") and "sample_img_s" not in best["gan"].split(";")
    assert df.iloc[0]["row"] == "real"  # the floor sits on top
    md = (tmp_path / "summary.md").read_text()
    first_rows = [line for line in md.splitlines() if line.startswith("| ") and "model" not in line]
    assert first_rows[0].startswith("| real data (floor) |")
    assert "**12 ± 5.0**" in md and "**0.9 ± n/a**" in md
    tex = (tmp_path / "summary.tex").read_text()
    assert r"\textbf{12 $\pm$ 5.0}" in tex and r"FID $\downarrow$" in tex
    assert r"b=\textless{}x\textgreater{}" in tex  # LaTeX specials escaped


def test_rows_under_another_protocol_are_a_separate_labelled_group(results, tmp_path):
    rep = tables_only(results, tmp_path)
    groups = rep.summary.groups
    assert [g.main for g in groups] == [True, False]
    assert any("n_generated: 16 != 32" in d for d in groups[1].differences)
    df = csv(tmp_path)
    odd = df[df["n"] == 32]
    assert set(odd["row"]) == {"run", "mean"} and not odd["comparable"].astype(bool).any()
    assert "n_generated" in odd.iloc[0]["protocol_diff"]
    # Never averaged with the N=16 runs of the same model.
    assert df[(df["row"] == "mean") & (df["model"] == "gan")]["n_seeds"].tolist() == [3, 1]
    md = (tmp_path / "summary.md").read_text()
    assert "NOT comparable with this experiment's main table" in md


def test_sweep_points_are_separate_models_labelled_by_their_settings(results, tmp_path):
    tables_only(results, tmp_path)
    df = csv(tmp_path)
    variants = sorted(df[(df["row"] == "mean") & (df["model"] == "sweep")]["variant"])
    assert variants == ["a=1, b=<x>", "a=1, b=y", "a=2, b=<x>", "a=2, b=y"]
    assert set(df[df["model"] == "gan"]["variant"].fillna("")) == {""}  # the seed is not a setting


def test_failed_runs_are_listed_not_fatal(results, tmp_path):
    rep = tables_only(results, tmp_path)
    (failed,) = rep.summary.failed
    assert failed["status"] == "failed" and failed["error"] == EVIL_ERROR
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["failed"][0]["error"] == EVIL_ERROR
    assert "boom at step 3" in (tmp_path / "summary.md").read_text()


def test_unscored_runs_beside_failed_ones(tmp_path):
    make_run(tmp_path, "gan", 0, {})  # metrics disabled: costs only
    make_run(tmp_path, "gan", 1, {})
    make_run(tmp_path, "boom", 0, {}, status="failed", error="RuntimeError: boom")
    for d in tmp_path.glob("*/metrics.json"):
        m = json.loads(d.read_text())
        m.pop("protocol", None)
        d.write_text(json.dumps(m))
    rep = tables_only(tmp_path, tmp_path / "out")
    (group,) = rep.summary.groups
    assert group.title == "fake: not scored"
    (per_seed,) = rep.tables(per_seed=True)
    assert [c[0].text for c in per_seed.rows] == ["gan", "gan"]  # not the failed run
    (mean,) = rep.tables()
    assert mean.rows[0][1].text == "2" and "FID" not in mean.header
    assert [f["run_id"] for f in rep.summary.failed] == [
        d.name for d in tmp_path.glob("fake-boom-*")
    ]


def test_a_copy_of_the_results_reports_the_same_tables(results, tmp_path):
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("report"))
    a, b = tmp_path / "a", tmp_path / "b"
    tables_only(results, a)
    tables_only(copy, b)
    for name in ("summary.csv", "summary.json", "summary.md", "summary.tex"):
        text = (a / name).read_text()
        assert text == (b / name).read_text(), name
        assert str(results) not in text and str(tmp_path) not in text and "/somewhere" not in text
        assert "2026-01-0" not in text  # no timestamps


def test_several_results_folders_merge(results, tmp_path):
    d1, d2 = tmp_path / "shard0", tmp_path / "shard1"
    for i, rd in enumerate(
        sorted(p for p in results.iterdir() if p.is_dir() and p.name != "report")
    ):
        shutil.copytree(rd, (d1 if i % 2 else d2) / rd.name)
    merged = tables_only([d1, d2], tmp_path / "m").table
    whole = tables_only(results, tmp_path / "w").table
    pd.testing.assert_frame_equal(merged, whole)
    assert collect_runs([d1, d2])["run_id"].tolist() == collect_runs(results)["run_id"].tolist()


def test_pareto_front_keeps_only_undominated_points():
    # (NFE, FID): (1, 50) and (10, 20) and (100, 10) trade off; (50, 30) is dominated by (10, 20).
    assert pareto_front([1, 10, 50, 100], [50, 20, 30, 10]) == [0, 1, 3]
    assert pareto_front([1, 2], [5, 4], x_better="higher") == [1]


# -- figures, grids and html -------------------------------------------------------------------
def test_plots_cover_metrics_compute_sampling_losses_sweeps_and_guidance(full_report):
    out = full_report.out_dir
    names = {Path(f).stem for f in full_report.files if f.startswith("plots/")}
    fp = next(g.fingerprint for g in full_report.summary.groups if g.main)
    for stem in (
        f"metrics-fake-{fp}",
        f"compute-fake-{fp}",
        f"sampling-fake-{fp}",
        f"sweep-fake-{fp}-sweep",
        "train-fake-gan",
        "train-fake-cgan",
        "cfg-fake-cgan",
    ):
        assert stem in names, sorted(names)
        for ext in ("png", "svg"):
            assert (out / "plots" / f"{stem}.{ext}").stat().st_size > 1000
    assert full_report.notes == [], full_report.notes
    with Image.open(out / "plots" / f"metrics-fake-{fp}.png") as im:
        assert np.asarray(im.convert("L")).std() > 10  # something was drawn


def test_grids_include_samples_per_class_mix_and_memorization(full_report):
    grids = {Path(f).name for f in full_report.files if f.startswith("grids/")}
    assert {
        "fake-gan.png",
        "fake-cgan.png",
        "fake-cgan-per-class.png",
        "fake-gan-memorization.png",
    } <= grids
    assert any(g.endswith("mix-0-1-seed0.png") for g in grids)
    with Image.open(full_report.out_dir / "grids" / "fake-cgan-per-class.png") as im:
        # 3 classes x 8 columns of 8px images with 2px padding, enlarged by an integer factor.
        w, h = im.size
        assert w % 82 == 0 and h == (3 * 10 + 2) * (w // 82)


def test_real_grid_comes_from_the_data_or_is_skipped_with_a_note(full_report, results, tmp_path):
    assert "fake-real.png" in {Path(f).name for f in full_report.files}  # digits load offline
    moved = tmp_path / "results"
    shutil.copytree(results, moved, ignore=shutil.ignore_patterns("report"))
    for cfg in moved.glob("*/config.toml"):
        cfg.write_text(
            cfg.read_text().replace('source = "digits"', 'source = "folder"\nroot = "/nonexistent"')
        )
    rep = write_report(moved, plots=False, html=False)
    assert not any("real" in f for f in rep.files if f.startswith("grids/"))
    assert any("no real-image grid for fake: the data could not be loaded" in n for n in rep.notes)
    assert any(f.endswith("fake-gan.png") for f in rep.files)  # the rest still works
    # Real images saved in the real row's folder are used without any data access.
    rng = np.random.default_rng(0)
    (real,) = moved.glob("fake-real-*")
    for i in range(6):
        png(real / "samples" / f"{i:06d}.png", rng)
    rep = write_report(moved, plots=False, html=False, data=False)
    assert "grids/fake-real.png" in rep.files and not rep.notes


def test_html_is_self_contained_and_escaped(full_report):
    html = (full_report.out_dir / "report.html").read_text()
    assert "<script" not in html and "<link" not in html and "http://" not in html
    srcs = re.findall(r'<img src="([^"]{0,30})', html)
    assert len(srcs) >= 10 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; boom" in html  # the failed run's error
    assert "&lt;b&gt;cat&lt;/b&gt; &amp; dog" in html and "<b>cat</b>" not in html
    assert "b=&lt;x&gt;" in html
    assert full_report.summary.groups[0].fingerprint in html


def test_cli_report_prints_the_aggregated_table_and_failed_runs(results, tmp_path):
    res = runner.invoke(app, ["report", str(results), "--out", str(tmp_path), "--no-figures"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "real data (floor)" in flat and "FID ↓" in flat
    assert (
        "KID (lower is better, unbiased at this small N; FID beside it): gan 0.012 ± 0.0050, "
        "FID 12 (2 s training, 1 NFE); cgan 0.02 ± n/a, FID 20" in flat
    )
    assert re.search(r"failed fake-dcgan-s0-\S+: <script>alert\(1\)</script> boom", flat)
    assert not (tmp_path / "report.html").exists() and (tmp_path / "summary.csv").exists()


def test_empty_results_folder_is_a_one_line_error(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no runs found" in res.output


# -- in a browser ----------------------------------------------------------------------------------
# Reports the page's images and summary-table rows in its title, once everything has loaded.
PROBE = (
    '<script>window.addEventListener("load",()=>{const im=[...document.images];'
    "const ok=im.filter(i=>i.complete&&i.naturalWidth>0).length;"
    'const rows=document.querySelectorAll("table.summary tbody tr").length;'
    "document.title=`probe imgs=${im.length} ok=${ok} rows=${rows}`;});</script>"
)


def chromium() -> str:
    """The Chromium binary; installed with apt-get when missing and running as root."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and apt-get cannot install it here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"]):
        subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
        if path := shutil.which("chromium"):
            return path
    res = subprocess.run(
        ["apt-get", "install", "-y", "chromium"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if path := shutil.which("chromium"):
        return path
    pytest.skip(f"chromium could not be installed: {res.stderr.strip()[-300:]}")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_html_renders_tables_and_images_in_chromium(full_report, tmp_path):
    report = full_report
    browser = chromium()
    html = report.out_dir / "report.html"

    shot = tmp_path / "shot.png"
    res = headless(
        browser, tmp_path / "p1", f"--screenshot={shot}", "--window-size=1200,3000", html.as_uri()
    )
    assert shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.shape == (3000, 1200)
    assert px.std() > 20 and (px < 200).mean() > 0.05  # drawn, not a blank page

    probe = tmp_path / "probe.html"
    probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    res = headless(
        browser, tmp_path / "p2", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()
    )
    m = re.search(r"<title>probe imgs=(\d+) ok=(\d+) rows=(\d+)</title>", res.stdout)
    assert m, res.stdout[:500] + res.stderr[-1000:]
    imgs, ok, rows = map(int, m.groups())
    expected_rows = sum(len(t.rows) for t in report.tables() + report.tables(per_seed=True))
    assert imgs == len([f for f in report.files if f.endswith(".png")])  # plots and grids
    assert ok == imgs >= 10  # every embedded image decoded
    assert rows == expected_rows >= 10
    assert "boom at step 3" in res.stdout  # the failed run is listed


# -- end to end ----------------------------------------------------------------------------------
def test_report_of_a_real_smoke_run(tmp_path):
    args = ["run", "-e", "smoke", "--seeds", "0,1", "--set", "train.kimg=0.064"]
    res = runner.invoke(app, [*args, "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "report"
    df = csv(out)
    mean = df[df["row"] == "mean"].iloc[0]
    assert mean["model"] == "dcgan" and mean["n_seeds"] == 2 and mean["train_s_ci95"] >= 0
    assert sorted(df[df["row"] == "run"]["seed"]) == [0, 1]
    assert (out / "plots" / "train-smoke-dcgan.png").is_file()  # loss_d and loss_g curves
    assert (out / "grids" / "smoke-dcgan.png").is_file()
    assert (out / "grids" / "smoke-real.png").is_file()  # digits are bundled: the data loads
    html = (out / "report.html").read_text()
    assert "smoke: not scored" in html and html.count("<img ") >= 3
