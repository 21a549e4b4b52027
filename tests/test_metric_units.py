"""Metrics as registered units: the registry's rules, what reads it (config, tables,
plots, `genbench list`), and the DINOv2 feature space's plumbing (stand-in extractors)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from genbench import metric_registry as unit_registry
from genbench.config import DataConfig, MetricsConfig
from genbench.data import load_data
from genbench.metrics import dinov2, scoring, units
from genbench.metrics.features import extract_features
from genbench.metrics.fid import fid
from genbench.metrics.kid import kid
from genbench.metrics.protocol import fingerprint
from genbench.metrics.settings import FidelitySettings
from genbench.report import columns as tables
from tests.standin import STANDIN_B_NAME, standin_choice

DATA = DataConfig(source="digits", resolution=16, split="random")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test."""
    monkeypatch.setattr(unit_registry, "_UNITS", dict(unit_registry._UNITS))
    return units


@pytest.fixture(scope="module")
def bundle():
    return load_data(DATA)


def _toy(x: units.UnitInputs) -> units.UnitResult:
    return units.UnitResult(scores={"toy": float(len(x.images))})


def test_builtins_cover_the_scores_and_audits():
    names = [u.name for u in units.metric_units()]
    for n in ("fid", "kid", "isc", "prc", "fd_dinov2", "kid_dinov2", "copies", "bootstrap"):
        assert n in names
    assert units.nameable() == ("fid", "kid", "isc", "prc", "fd_dinov2", "kid_dinov2")
    keys = [c.key for c in units.columns()]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("unit", "error"),
    [
        (units.MetricUnit("Bad Name", _toy), "metric name"),
        (units.MetricUnit("fid", _toy), "registered twice"),
        (units.MetricUnit("toy", _toy, (units.Column("fid", "x", "lower"),)), "already written"),
        (units.MetricUnit("toy", _toy, space="clip"), "unknown feature space"),
        (units.MetricUnit("toy", _toy, (units.Column("toy", "x", "down"),)), "better"),
    ],
)
def test_registry_rejects_bad_names_and_clashes(registry, unit, error):
    with pytest.raises(ValueError, match=error):
        registry.register_metric(unit)


def test_config_validation_reads_the_registry(registry):
    with pytest.raises(ValidationError, match="unknown metric 'toy'"):
        MetricsConfig(names=["fid", "toy"])
    registry.register_metric(units.MetricUnit("toy", _toy, (units.Column("toy", "T", "lower"),)))
    assert MetricsConfig(names=["fid", "toy"]).names == ["fid", "toy"]
    with pytest.raises(ValidationError, match="metric for snapshots 'toy'"):
        MetricsConfig(snapshot_names=["toy"])  # not marked cheap enough for snapshots
    with pytest.raises(ValidationError, match="turned on by metrics.memorization"):
        MetricsConfig(names=["copies"])


def test_tables_and_plots_take_their_columns_from_the_registry():
    for c in units.columns():
        if c.table:
            col = tables.COLUMN[c.key]
            assert (col.label, col.better, col.kind) == (c.label, c.better, "quality")
        else:
            assert c.key not in tables.COLUMN and c.key in tables.EXTRA_MEANS
    assert set(tables.GUIDANCE) == {c.key for c in units.columns() if c.guidance}
    assert "class_consistency" in tables.GUIDANCE


def test_genbench_list_shows_the_metric_units():
    from genbench.cli import app

    out = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for u in units.metric_units():
        assert u.name in out.output
    assert "metrics.memorization" in out.output


def _score(images, bundle, **cfg):
    return scoring.score_images(
        images,
        scoring.ScoringSetup(
            bundle=bundle,
            data_cfg=DATA,
            metrics_cfg=MetricsConfig(
                classifier=False, memorization=False, per_class=False, bootstrap=0, **cfg
            ),
            n_ref=60,
            choice=standin_choice(),
            device=CPU,
        ),
    )


def test_a_registered_unit_runs_and_its_score_is_written(registry, bundle):
    registry.register_metric(units.MetricUnit("toy", _toy, (units.Column("toy", "T", "lower"),)))
    out = _score(bundle.train.images[:40], bundle, names=["fid", "toy"])
    assert out["scores"]["toy"] == 40.0
    assert "kid" not in out["scores"]  # only what the config selects runs


def test_dinov2_offline_is_unavailable_with_its_reason(bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("GENBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    images = bundle.train.images[:40]
    plain = _score(images, bundle, names=["fid", "kid"])
    out = _score(images, bundle, names=["fid", "kid", "fd_dinov2", "kid_dinov2"])
    for key in ("fd_dinov2", "kid_dinov2"):
        assert out["scores"][key] is None
        assert "DINOv2 ViT-L/14 is unavailable" in out["scores_unavailable"][key]
    assert out["scores"]["fid"] == pytest.approx(plain["scores"]["fid"])
    assert "unavailable" in out["protocol"]["feature_spaces"]["dinov2"]
    # Without a second space, the protocol (and so every older fingerprint) is unchanged.
    assert "feature_spaces" not in plain["protocol"]
    assert plain["protocol"]["fingerprint"] == fingerprint(
        {k: v for k, v in plain["protocol"].items() if k != "fingerprint"}
    )
    assert out["protocol"]["fingerprint"] != plain["protocol"]["fingerprint"]


def test_dinov2_space_reads_its_own_features(bundle, monkeypatch):
    """With a second stand-in as the DINOv2 extractor, fd_dinov2 and kid_dinov2 are FID and
    KID of that extractor's features, not of the Inception space's."""
    other = standin_choice(STANDIN_B_NAME)
    monkeypatch.setattr(dinov2, "choose", lambda **_: other)
    images = bundle.train.images[100:160]
    out = _score(images, bundle, names=["fid", "kid", "fd_dinov2", "kid_dinov2"])
    ref = scoring.heldout_parts(bundle.holdout, n_ref=60, n=60).reference.images
    g, r = (extract_features(x, choice=other, device=CPU)["feat"] for x in (images, ref))
    assert out["scores"]["fd_dinov2"] == pytest.approx(fid(g, r), rel=1e-6)
    want, _ = kid(g, r, settings=FidelitySettings(kid_subset_size=1000))
    assert out["scores"]["kid_dinov2"]["mean"] == pytest.approx(want["mean"], rel=1e-6)
    assert out["scores"]["fd_dinov2"] != pytest.approx(out["scores"]["fid"], rel=1e-3)
    assert out["protocol"]["feature_spaces"]["dinov2"]["extractor"] == STANDIN_B_NAME
    assert not out["scores_unavailable"]


def test_networks_trained_on_first_use_show_their_steps_on_the_running_phase(bundle):
    """The copy descriptor and the class-consistency classifier train inside a unit's progress
    phase (minutes on a new data set): each step advances that phase's bar."""
    from genbench.metrics.audit.descriptor import DescriptorSettings, train_descriptor
    from genbench.metrics.classifier import ClassifierSettings, _train
    from genbench.utils.progress import Tick, progress_to

    calls: list[tuple[int | None, int | None]] = []

    class Recorder(Tick):
        def __call__(self, completed=None, total=None, logs=None, *, advance=None) -> None:
            calls.append((completed, total))

    images = bundle.train.images[:64]
    with progress_to(Recorder(None, None)):
        train_descriptor(images, settings=DescriptorSettings(steps=3, batch_size=16), device=CPU)
        assert calls == [(1, 3), (2, 3), (3, 3)]
        calls.clear()
        _train(bundle.train, bundle.holdout, settings=ClassifierSettings(steps=2), device=CPU)
        assert calls == [(1, 2), (2, 2)]
    calls.clear()
    train_descriptor(images, settings=DescriptorSettings(steps=2, batch_size=16), device=CPU)
    assert calls == []  # outside a phase nothing is reported
