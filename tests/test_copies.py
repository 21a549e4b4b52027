"""The copy audit against adversarial generators that return edited training images."""

from __future__ import annotations

import json

import pytest
import torch

from genbench import registry
from genbench.config import DataConfig, MetricsConfig
from genbench.data import load_data
from genbench.metrics import scoring
from genbench.metrics.audit import copy_audit, datacopy, fresh_sets, mixes, pool_of
from genbench.metrics.audit.descriptor import DescriptorSettings, get_descriptor
from genbench.metrics.audit.settings import CopySettings
from genbench.metrics.audit.stats import wilson
from genbench.metrics.protocol import SUBSET_SEED
from genbench.runs.grid import run_experiment
from tests.conftest import FAST_AUDIT, tiny_experiment
from tests.standin import standin_choice
from tests.test_reliability import _site

DATA = DataConfig(source="digits", resolution=16, split="random")
CPU = torch.device("cpu")
SETTINGS = CopySettings(descriptor=DescriptorSettings(steps=FAST_AUDIT["copy_descriptor_steps"]))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One cache for the module: the descriptor trains once and every test reuses it.
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))


@pytest.fixture(scope="module")
def bundle():
    return load_data(DATA)


class _Inputs:
    """What the audit reads of a scoring call (the held-out parts and the data)."""

    def __init__(self, bundle, n: int) -> None:
        self.bundle = bundle
        self.parts = scoring.heldout_parts(bundle.holdout, n_ref=40, n=n)


def audit(bundle, images, *, n: int = 40, settings: CopySettings = SETTINGS, exclude=None):
    x = _Inputs(bundle, n)
    pool = pool_of(x)
    fresh = fresh_sets(x, pool, want=n)
    if exclude is not None:
        exclude = exclude + pool.offset("heldout")
    return copy_audit(
        images,
        pool=pool,
        fresh=fresh,
        settings=settings,
        device=CPU,
        describe={"dataset": "digits-test"},
        exclude=exclude,
    )


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


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


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
    g = torch.Generator().manual_seed(1)
    src = torch.randperm(len(bundle.train), generator=g)[:40]
    v = audit(bundle, EDITS[edit](bundle.train.images[src]))
    assert v["flagged"] and v["rate"] >= 0.8, v
    assert "per-sample" in v["flagged_by"]


def test_blends_and_mosaics_of_two_training_images_are_caught_by_the_mix_stage(bundle):
    g = torch.Generator().manual_seed(2)
    a = bundle.train.images[torch.randperm(len(bundle.train), generator=g)[:40]].float() / 255
    b = bundle.train.images[torch.randperm(len(bundle.train), generator=g)[:40]].float() / 255
    mosaic = audit(bundle, _u8(mixes_mosaic(a, b)))
    assert mosaic["flagged"] and mosaic["caught_by_stage"].get("mosaic", 0) >= 36, mosaic
    # Blends of two random 8x8 digits are ambiguous (many look-alike pairs): the blend stage
    # finds a fraction of them per sample; the run-level flag at a realistic size is tested
    # on Fashion-MNIST (tests/test_copy_detection.py).
    blend = audit(bundle, _u8(0.5 * a + 0.5 * b))
    assert blend["caught_by_stage"].get("blend", 0) >= 4, blend
    assert blend["rate"] > blend["heldout_rate"]


def mixes_mosaic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from genbench.metrics.audit.edits import mosaic

    return mosaic(a, b, keep=0.5, axis=-1)


def test_heldout_replay_is_flagged_and_matched_to_the_heldout_split(bundle):
    x = _Inputs(bundle, 40)
    v = audit(bundle, x.parts.reference.images[:40])
    assert v["flagged"] and v["rate"] >= 0.9, v


def test_real_heldout_images_are_flagged_at_about_the_calibrated_rate(bundle):
    s = CopySettings(alpha=0.05, descriptor=SETTINGS.descriptor)
    x = _Inputs(bundle, 80)
    v = audit(bundle, x.parts.real.images, n=80, settings=s, exclude=x.parts.positions["real"])
    assert not v["flagged"], v
    # Fresh images are flagged like the disjoint check set of fresh images: within its 95%
    # interval (at 80 calibration images the six alpha/6 thresholds are rough, so the rate
    # itself can exceed alpha; the Fashion-MNIST tests check the nominal rate at N = 500).
    lo, hi = wilson(round(v["heldout_rate"] * 80), 80)
    assert lo <= v["rate"] <= hi, (v["rate"], v["heldout_rate"])
    # Fresh images sit like fresh images: the closeness AUC's interval holds 0.5.
    lo, hi = v["closer_than_fresh"]["auc_ci95"]
    assert lo <= 0.5 <= hi, v["closer_than_fresh"]


def test_wilson_interval_covers_the_ends():
    assert wilson(0, 50)[0] == 0.0 and 0 < wilson(0, 50)[1] < 0.1
    assert wilson(50, 50)[1] == 1.0 and wilson(50, 50)[0] > 0.9


def test_descriptor_is_cached_and_reused(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    s = DescriptorSettings(steps=5)
    a, info_a = get_descriptor(bundle.train.images, describe={}, device=CPU, settings=s)
    b, info_b = get_descriptor(bundle.train.images, describe={}, device=CPU, settings=s)
    assert (info_a["cached"], info_b["cached"]) == (False, True)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_c_t_says_copying_only_when_samples_sit_closer_than_fresh_images():
    g = torch.Generator().manual_seed(0)
    fresh = torch.rand(600, generator=g)
    cells = torch.randint(0, 4, (600,), generator=g)
    s_cells = torch.randint(0, 4, (400,), generator=g)
    same = datacopy.c_t_test(torch.rand(400, generator=g), s_cells, fresh, cells, k=4)
    closer = datacopy.c_t_test(0.8 * torch.rand(400, generator=g), s_cells, fresh, cells, k=4)
    farther = datacopy.c_t_test(1 + torch.rand(400, generator=g), s_cells, fresh, cells, k=4)
    assert not same["flagged"] and abs(same["z"]) < 3
    assert closer["flagged"] and closer["c_t"] < 0
    assert not farther["flagged"] and farther["c_t"] > 0
    # A cell with too few samples does not count.
    sparse = datacopy.c_t_test(torch.rand(10), torch.zeros(10, dtype=torch.long), fresh, cells, k=4)
    assert sparse["c_t"] is None and not sparse["flagged"]


def test_mann_whitney_z_matches_scipy():
    from scipy.stats import mannwhitneyu

    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(50, generator=g), torch.rand(70, generator=g).round(decimals=1)
    u = mannwhitneyu(a.numpy(), b.numpy(), method="asymptotic", use_continuity=False)
    m, n = 50, 70
    z_scipy = (u.statistic - m * n / 2) / (m * n * (m + n + 1) / 12) ** 0.5
    assert datacopy.mann_whitney_z(a, b) == pytest.approx(z_scipy, abs=0.05)


def test_mix_stage_never_matches_a_query_to_itself(bundle):
    q = bundle.holdout.images[:8]
    pool = torch.cat([bundle.train.images[:200], bundle.holdout.images[:8]])
    own = torch.arange(200, 208)
    m = mixes.match_mixes(q, pool, device=CPU, exclude=own)
    assert not (m.half_index == own).any() and not (m.blend_pair == own[:, None]).any()
    m_self = mixes.match_mixes(q, pool, device=CPU)
    assert (m_self.half_d < 1e-6).all()  # without the exclusion each finds itself


def test_blank_samples_are_not_blends_of_training_images(bundle):
    # A diverged sampler's all-black (or all-white) images: an intercept explains them, so a
    # two-image fit of them "explains" them too; that is no evidence of copying.
    blank = torch.cat([torch.zeros(6, 1, 16, 16), torch.full((6, 1, 16, 16), 255.0)])
    blank = blank.to(torch.uint8).expand(-1, bundle.train.images.shape[1], -1, -1)
    m = mixes.match_mixes(blank, bundle.train.images[:200], device=CPU)
    assert (m.blend_d == 1).all() and (m.half_d >= 0.99).all()
    q = bundle.holdout.images[:8]  # structured images still get a real fit
    assert (mixes.match_mixes(q, bundle.train.images[:200], device=CPU).blend_d < 1).all()
    report = audit(bundle, blank, n=len(blank))
    assert report["n_copies"] == 0 and not report["flagged"]


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


class Blended(_Copier):
    def edit(self, x):
        return (0.5 * x.float() + 0.5 * x.roll(1, 0).float()).round()


class DeclaredBlend(Blended):
    derived_from_training = True  # says so: ranked apart, audit stated
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
            "declared-blend": "genbench_copiers:DeclaredBlend",
        },
    )


@pytest.fixture(scope="module")
def copier_results(copier_site, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(copier_site))
    mp.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))
    registry.discover.cache_clear()
    models = [*COPIER_NAMES, "declared-blend", "dcgan"]
    metrics = MetricsConfig(classifier=False, per_class=False, bootstrap=50, **FAST_AUDIT)
    exp = tiny_experiment(models, n=48, kimg=0.064).model_copy(update={"metrics": metrics})
    out_dir = tmp_path_factory.mktemp("copier-results")
    try:
        outcomes = run_experiment(
            exp, results_dir=out_dir, device="cpu", extractor=standin_choice()
        )
    finally:
        registry.discover.cache_clear()
        mp.undo()
    assert [o.status for o in outcomes] == ["done"] * len(models)
    return out_dir, {o.model: o.run_dir for o in outcomes}


COPIER_NAMES = ("copy-exact", "copy-mirrored", "copy-shifted", "copy-noised")


def test_copier_plugins_are_flagged_in_metrics_json(copier_results):
    _, runs = copier_results
    for model, rd in runs.items():
        m = json.loads((rd / "metrics.json").read_text())
        pool = m["copies"]["pool"]
        # Every real image: the whole training split, the validation slice, the held-out split.
        assert pool["train"] > 1000 and pool["validation"] > 0 and pool["heldout"] > 300
        assert m["derived_from_training"] is (model == "declared-blend")
        if model in COPIER_NAMES:
            assert m["copies"]["flagged"], (model, m["copies"])
            assert m["scores"]["copy_rate"] > 0.8
            assert (rd / "copies.png").exists()
        elif model == "declared-blend":
            assert m["copies"]["rate"] is not None  # audited like any other
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
    copiers = [r for r in means if r["model"] in COPIER_NAMES]
    assert len(copiers) == len(COPIER_NAMES)
    assert all(not r.get("best") for r in copiers)  # never marked best, in any column
    md = (out_dir / "report" / "summary.md").read_text()
    for name in COPIER_NAMES:
        assert f"{name} ⚠copies" in md
    headline = next(line for line in md.splitlines() if "Flagged for copying" in line)
    ranked, flagged = headline.split("Flagged for copying")
    assert "dcgan" in ranked and all(n not in ranked for n in ("copy-exact", "copy-noised"))
    assert all(n in flagged for n in COPIER_NAMES)
    assert "declared-blend" not in headline  # ranked apart, in its own group


def test_declared_generator_is_ranked_in_its_own_group_with_its_audit_stated(copier_results):
    out_dir, _ = copier_results
    summary = json.loads((out_dir / "report" / "summary.json").read_text())
    groups = summary["groups"]
    assert [g["derived_from_training"] for g in groups].count(True) == 1
    means = {r["model"]: r for r in summary["rows"] if r.get("row") == "mean"}
    declared = means["declared-blend"]
    assert declared["derived"] and "⚠copies" not in str(declared.get("model"))
    assert declared["audit"].startswith("derived from training images (by design); copy audit:")
    assert not means["dcgan"]["derived"]
    md = (out_dir / "report" / "summary.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Ranked apart") or "Ranked apart" in x)
    assert "declared-blend" in line and "dcgan" not in line
    # Its rows are in its group's tables only, after that group's heading.
    apart = md.index("derived from training images (by design)\n")
    assert md.index("| declared-blend |") > apart and md.index("| dcgan |") < apart


def test_audit_calibrates_on_the_validation_slice_when_the_reference_uses_up_the_heldout(bundle):
    """The `full` experiment's situation (N_ref = the whole test split), scaled down: the
    audit still runs, on fresh validation images, and says so; never a null copy rate."""

    class Used:
        def __init__(self) -> None:
            self.bundle = bundle
            self.parts = scoring.heldout_parts(bundle.holdout, n_ref=len(bundle.holdout), n=40)

    x = Used()
    assert len(x.parts.calibration) == 0
    pool = pool_of(x)
    fresh = fresh_sets(x, pool, want=40)
    assert fresh.source.startswith("validation slice")
    v = copy_audit(
        bundle.train.images[:40],
        pool=pool,
        fresh=fresh,
        settings=SETTINGS,
        device=CPU,
        describe={"dataset": "digits-test"},
    )
    assert v["rate"] is not None and v["flagged"] and v["fresh_source"] == fresh.source


def test_full_experiment_plan_audits_every_run():
    from typer.testing import CliRunner

    from genbench.cli import app

    res = CliRunner().invoke(app, ["run", "-e", "full", "--dry-run"])
    assert res.exit_code == 0, res.output
    plans = [line for line in res.output.splitlines() if line.startswith("# copy audit")]
    from genbench.config import load_experiment

    full = load_experiment("full")
    assert len(plans) == len(full.models) * len(full.seeds) >= 12  # every model, every seed
    assert all("copy audit: on" in p and "validation slice's last 2 x 1000" in p for p in plans)


# -- the copied-fraction verdict ---------------------------------------------------------
def _sources(bundle, n: int, k: int, seed: int) -> torch.Tensor:
    """k sets of n distinct training images (K x n x 1 x H x W floats in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(bundle.train), generator=g)[: n * k].reshape(k, n)
    return (
        bundle.train.images[idx.flatten()].float().reshape(k, n, *bundle.train.images.shape[1:])
        / 255
    )


@pytest.mark.parametrize(("family", "strength"), [("grid", 2), ("strips", 4)])
def test_mosaics_of_four_training_images_are_flagged(bundle, family, strength):
    """A 2 x 2 grid or four strips, each piece from another training image: the mosaic
    stage matches every piece exactly. (Blends of three and four images need images with
    more structure than 8 x 8 digits: tests/test_copy_detection.py, on Fashion-MNIST.)"""
    from genbench.metrics.audit.edits import apply

    src = _sources(bundle, 40, 4, seed=len(family))
    made = apply(src[0], family, strength, gen=torch.Generator().manual_seed(1), others=src[1:])
    v = audit(bundle, _u8(made))
    assert v["flagged"], (v["copied_fraction"], v["caught_by_stage"])
    assert v["caught_by_stage"].get("mosaic", 0) >= 30, v["caught_by_stage"]


def test_membership_reads_copies_as_tied_and_fresh_images_as_not(bundle):
    x = _Inputs(bundle, 80)
    copies = audit(bundle, bundle.train.images[:80], n=80)
    real = audit(bundle, x.parts.real.images, n=80, exclude=x.parts.positions["real"])
    for space in ("descriptor", "pixels"):
        c = copies["copied_fraction"]["membership"][space]
        r = real["copied_fraction"]["membership"][space]
        assert c["nearest_is_training"] == 1.0 and c["ci95"][0] > 0.5, c
        assert r["ci95"][0] <= 0.0 <= r["ci95"][1], r  # fresh images: no excess
        assert 0 < r["null_rate"] < 1
    assert not real["flagged"] and real["closer_than_fresh"]["c_t"]


def test_copied_fraction_p_value_and_lower_bound_agree():
    from genbench.metrics.audit.stats import difference_estimate, excess_estimate, holm

    for k in (0, 5, 20, 60, 200):
        for tol in (0.0, 0.01, 0.05):
            e = difference_estimate(k, 500, 9, 1000, tolerance=tol, level=0.01)
            assert (e.p_value < 0.01) == (e.lower > tol), (k, tol, e)
            m = excess_estimate(430 + k / 4, 500, null=0.856, tolerance=tol, level=0.01)
            assert (m.p_value < 0.01) == (m.lower > tol), (k, tol, m)
            assert m.ci95[0] <= m.fraction <= m.ci95[1]
    # Exact copies are far beyond any tolerance; fresh-like rates are not.
    assert excess_estimate(500, 500, null=0.856, tolerance=0.01, level=0.01).p_value < 1e-10
    assert excess_estimate(428, 500, null=0.856, tolerance=0.01, level=0.01).p_value > 0.3
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


@pytest.mark.parametrize("reference", ["test", "train"])
def test_real_data_row_and_audit_fresh_images_are_disjoint_under_either_reference(
    bundle, reference
):
    cfg = MetricsConfig(reference=reference, n_ref=60)
    parts, source = scoring.scoring_parts(bundle, cfg, n=40)
    pos = parts.positions
    sets = [set(pos[k].tolist()) for k in ("real", "calibration", "check")]
    if reference == "test":
        sets.append(set(pos["reference"].tolist()))
    assert source == ("train" if reference == "train" else "holdout")
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            assert not a & b
    # The real-data row takes the very same cut (it used to cut as if the reference were
    # held-out, so under reference = "train" its images were the calibration images).
    from genbench.config import ExperimentConfig
    from genbench.runs import real as real_mod

    seen = {}

    def spy(images, setup, **kw):
        seen["images"] = images
        raise RuntimeError("stop")

    exp = ExperimentConfig(name="t", models=["dcgan"], data=DATA, metrics=cfg, sample={"n": 40})
    mp = pytest.MonkeyPatch()
    mp.setattr(real_mod, "score_set", spy)
    mp.setattr(real_mod, "cached_features", lambda images, **kw: ({}, False))
    try:
        with pytest.raises(RuntimeError):
            real_mod.score_real_data(bundle, exp, choice=None, device=CPU, run_id="r")
    finally:
        mp.undo()
    assert torch.equal(seen["images"], parts.real.images)


def test_results_folder_keeps_one_descriptor_seed(tmp_path):
    from genbench.runs.steps import audit_metrics
    from genbench.storage.folder import audit_seed

    a = audit_seed(tmp_path / "a")
    assert audit_seed(tmp_path / "a") == a and (tmp_path / "a" / ".audit-seed.json").is_file()
    seeds = {audit_seed(tmp_path / f"r{i}") for i in range(4)}
    assert len(seeds) > 1  # drawn, not a constant a plugin could know
    m = audit_metrics(MetricsConfig(), tmp_path / "a")
    assert m.copy_descriptor_seed == a
    assert (
        audit_metrics(MetricsConfig(copy_descriptor_seed=3), tmp_path / "a").copy_descriptor_seed
        == 3
    )


def test_descriptor_aware_attacker_is_flagged(bundle):
    """A plugin handed the training images rebuilds the descriptor by genbench's own recipe
    (the public default seed) and, for each training image, keeps the mildest edit its
    rebuilt audit does not catch. The real audit trains under another seed (a results
    folder's) and still flags the run: membership does not depend on dodging thresholds."""
    from genbench.metrics.audit.copies import build_pool_index, query_stats
    from genbench.metrics.audit.edits import apply
    from genbench.metrics.audit.unit import fresh_stats
    from genbench.metrics.audit.verdict import calibrate

    x = _Inputs(bundle, 40)
    pool = pool_of(x)
    fresh = fresh_sets(x, pool, want=40)
    own = SETTINGS  # seed 0: what a plugin can reproduce
    index = build_pool_index(pool, own, describe={"dataset": "digits-test"}, device=CPU, k=1)
    cal, _, _ = fresh_stats(fresh, pool, index, own, device=CPU)
    thresholds = calibrate(cal, own.alpha)
    # 120 samples: membership's interval needs more than the 40 the other tests audit.
    pick = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(9))[:120]
    src = bundle.train.images[pick].float() / 255
    out, open_ = None, torch.ones(len(src), dtype=torch.bool)
    for family, strength in (("shift", 1), ("rotate", 8), ("elastic", 1.0), ("swirl", 40)):
        cand = _u8(apply(src, family, strength, gen=torch.Generator().manual_seed(3)))
        out = cand if out is None else torch.where(open_[:, None, None, None], cand, out)
        open_ &= thresholds.flags(query_stats(cand, pool, index, own, device=CPU))
    secret = CopySettings(descriptor=DescriptorSettings(steps=own.descriptor.steps, seed=271828))
    v = audit(bundle, out, settings=secret)
    assert v["descriptor"]["seed"] == 271828 and v["settings"]["descriptor"]["seed"] == 271828
    assert v["flagged"], (v["copied_fraction"], v["caught_by_stage"])


def test_larger_fresh_sets_leave_the_reference_and_the_real_data_row_as_they_were(bundle):
    """The audit's fresh sets grew to copy_fresh each; the FID/KID reference and the
    real-data row are the same images as before (so no KID or FID moves)."""
    n_ref, n = 60, 40
    perm = torch.randperm(len(bundle.holdout), generator=torch.Generator().manual_seed(SUBSET_SEED))
    parts = scoring.heldout_parts(bundle.holdout, n_ref=n_ref, n=n, n_fresh=1000)
    assert torch.equal(parts.positions["reference"], perm[:n_ref].sort().values)
    assert torch.equal(parts.positions["real"], perm[n_ref : n_ref + n].sort().values)
    rest = len(bundle.holdout) - n_ref - n
    assert len(parts.calibration) == len(parts.check) == max(n, min(1000, rest // 2))


def test_membership_counts_a_shared_nearest_image_once():
    """48 samples of a collapsed generator share one nearest real image, a training image:
    one piece of evidence, not 48 (counted per sample it was p ~ 1e-7 against a 72% chance
    rate). 48 copies of 48 different training images stay strong evidence."""
    from genbench.metrics.audit.membership import Membership, distinct_reading, nearest_is_train

    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(400, 16, generator=g), dim=1)
    is_train = torch.rand(400, generator=g) < 0.72
    train = is_train.nonzero()[:, 0]
    level = 0.01 / 3
    for queries, collapsed in ((base[train[:1]].repeat(48, 1), True), (base[train[:48]], False)):
        hit, null, nearest = nearest_is_train(queries, base, is_train, device=CPU)
        dh, dn = distinct_reading(nearest, is_train)
        m = Membership("descriptor", float(hit.sum()), len(hit), null, dh, dn)
        e = m.estimate(tolerance=0.01, level=level)
        assert hit.sum() == 48 and dn == (1 if collapsed else 48)
        assert (e.p_value >= level) if collapsed else (e.p_value < 1e-5), (collapsed, e)
