"""The copy audit against adversarial generators that return edited training images."""

from __future__ import annotations

import json

import pytest
import torch

from genbench import registry
from genbench.config import DataConfig, MetricsConfig
from genbench.data import load_data
from genbench.metrics import scoring
from genbench.metrics.copies import (
    CopySettings,
    build_index,
    calibrate,
    match,
    verdict,
    wilson,
)
from genbench.runner import run_experiment
from tests.conftest import tiny_experiment
from tests.standin import standin_choice
from tests.test_reliability import _site

DATA = DataConfig(source="digits", resolution=16, split="random")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))


@pytest.fixture(scope="module")
def bundle():
    return load_data(DATA)


def shift(x: torch.Tensor, dy: int, dx: int, fill: int = 0) -> torch.Tensor:
    """Translate uint8 images, filling the uncovered border (no wrap-around)."""
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def noised(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (
        (x.float() + torch.randn(x.shape, generator=g) * sigma * 255)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )


EDITS = {
    "exact": lambda x: x,
    "mirrored": lambda x: x.flip(-1),
    "shift1": lambda x: shift(x, 1, 0),
    "shift2": lambda x: shift(x, -2, 1, fill=255),
    "shift3": lambda x: shift(x, 3, -3),
    "noised": lambda x: noised(x, 0.03),
    "brighter": lambda x: (x.float() * 0.7 + 60).round().clamp(0, 255).to(torch.uint8),
    "rotated": lambda x: torch.rot90(x, 1, (-2, -1)),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_training_images_are_found_and_flagged(bundle, edit):
    s = CopySettings()
    g = torch.Generator().manual_seed(1)
    src = torch.randperm(len(bundle.train), generator=g)[:40]
    parts = scoring.heldout_parts(bundle.holdout, n_ref=40, n=40)
    index, _ = build_index(bundle.train.images, s, device=CPU)
    cal = calibrate(
        match(parts.calibration.images, bundle.train.images, index, s, device=CPU), s.alpha
    )
    chk = match(parts.check.images, bundle.train.images, index, s, device=CPU)
    m = match(EDITS[edit](bundle.train.images[src]), bundle.train.images, index, s, device=CPU)
    v = verdict(m, cal, chk, s)
    assert v["flagged"] and v["rate"] >= 0.8, v
    assert (m.index == src).float().mean() >= 0.8  # the right training image, not a look-alike


def test_heldout_images_are_flagged_at_about_the_calibrated_rate(bundle):
    s = CopySettings(alpha=0.05)
    parts = scoring.heldout_parts(bundle.holdout, n_ref=40, n=80)
    index, _ = build_index(bundle.train.images, s, device=CPU)
    cal = calibrate(
        match(parts.calibration.images, bundle.train.images, index, s, device=CPU), s.alpha
    )
    fresh = match(parts.real.images, bundle.train.images, index, s, device=CPU)
    chk = match(parts.check.images, bundle.train.images, index, s, device=CPU)
    v = verdict(fresh, cal, chk, s)
    assert not v["flagged"]
    # No more than the calibrated rate, up to the sampling error of 80 images.
    assert v["rate"] <= wilson(round(s.alpha * 80), 80)[1]


def test_wilson_interval_covers_the_ends():
    assert wilson(0, 50)[0] == 0.0 and 0 < wilson(0, 50)[1] < 0.1
    assert wilson(50, 50)[1] == 1.0 and wilson(50, 50)[0] > 0.9


def test_descriptor_index_is_cached_and_reused(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    s = CopySettings()
    a, hit_a = build_index(bundle.train.images, s, device=CPU)
    b, hit_b = build_index(bundle.train.images, s, device=CPU)
    assert (hit_a, hit_b) == (False, True) and torch.equal(a.fourier, b.fourier)


# -- plugins that copy, installed through entry-point metadata --------------------------------
COPIERS = """
import torch
from torch import nn
from genbench.contract import Generator


def _shift(x, dy, dx, fill=0):
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


class _Copier(Generator):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.net = nn.Linear(1, 1)

    def modules(self):
        return {"net": self.net}

    def train_step(self, images, labels):
        return {"loss": 0.0}

    def edit(self, x):
        return x

    def sample(self, n, *, labels=None, generator=None):
        imgs = self.train_data.images
        idx = torch.randint(0, len(imgs), (n,), generator=generator)
        return self.edit(imgs[idx]).float() / 255


class Exact(_Copier):
    pass


class Mirrored(_Copier):
    def edit(self, x):
        return x.flip(-1)


class Shifted(_Copier):
    def edit(self, x):
        return torch.cat([_shift(x[i : i + 1], 1 + i % 3, -(i % 3)) for i in range(len(x))])


class Noised(_Copier):
    def edit(self, x):
        g = torch.Generator().manual_seed(0)
        return (x.float() + torch.randn(x.shape, generator=g) * 0.03 * 255).round().clamp(0, 255)
"""


@pytest.fixture(scope="module")
def copier_site(tmp_path_factory):
    return _site(
        tmp_path_factory.mktemp("copier-site"),
        "genbench-copiers",
        COPIERS,
        {
            "copy-exact": "genbench_copiers:Exact",
            "copy-mirrored": "genbench_copiers:Mirrored",
            "copy-shifted": "genbench_copiers:Shifted",
            "copy-noised": "genbench_copiers:Noised",
        },
    )


@pytest.fixture(scope="module")
def copier_results(copier_site, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(copier_site))
    mp.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))
    mp.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    registry.discover.cache_clear()
    models = ["copy-exact", "copy-mirrored", "copy-shifted", "copy-noised", "dcgan"]
    exp = tiny_experiment(models, n=48, kimg=0.064).model_copy(
        update={"metrics": MetricsConfig(classifier=False, per_class=False, bootstrap=50)}
    )
    out_dir = tmp_path_factory.mktemp("copier-results")
    try:
        outcomes = run_experiment(exp, results_dir=out_dir, device="cpu")
    finally:
        registry.discover.cache_clear()
        mp.undo()
    assert [o.status for o in outcomes] == ["done"] * len(models)
    return out_dir, {o.model: o.run_dir for o in outcomes}


def test_copier_plugins_are_flagged_in_metrics_json(copier_results):
    _, runs = copier_results
    for model, rd in runs.items():
        m = json.loads((rd / "metrics.json").read_text())
        assert m["copies"]["n_train"] > 1000  # the whole training split, not a subset
        if model.startswith("copy-"):
            assert m["copies"]["flagged"], (model, m["copies"])
            assert m["scores"]["copy_rate"] > 0.8
            assert (rd / "copies.png").exists()
        else:
            assert not m["copies"]["flagged"], (model, m["copies"])


def test_real_data_row_is_not_flagged(copier_results):
    out_dir, _ = copier_results
    (real,) = [p for p in out_dir.iterdir() if "-real-" in p.name]
    m = json.loads((real / "metrics.json").read_text())
    assert m["model"] == "real" and not m["copies"]["flagged"]


def test_copiers_are_flagged_in_tables_and_headline_and_never_best(copier_results):
    from typer.testing import CliRunner

    from genbench.cli import app

    out_dir, _ = copier_results
    res = CliRunner().invoke(app, ["report", str(out_dir), "--no-figures", "--no-data"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out_dir / "report" / "summary.json").read_text())
    rows = summary["rows"] if isinstance(summary, dict) else summary
    means = [r for r in rows if r.get("row") == "mean"]
    copiers = [r for r in means if str(r["model"]).startswith("copy-")]
    assert len(copiers) == 4
    assert all(not r.get("best") for r in copiers)  # never marked best, in any column
    md = (out_dir / "report" / "summary.md").read_text()
    for name in ("copy-exact", "copy-mirrored", "copy-shifted", "copy-noised"):
        assert f"{name} ⚠copies" in md
    headline = next(line for line in md.splitlines() if "Flagged for copying" in line)
    ranked, flagged = headline.split("Flagged for copying")
    assert "dcgan" in ranked and all(n not in ranked for n in ("copy-exact", "copy-noised"))
    assert all(n in flagged for n in ("copy-exact", "copy-mirrored", "copy-shifted", "copy-noised"))
