"""Every registered metric unit runs on small stand-in inputs and returns the columns it
declares (timm style: one parametrized test over the registry, so a new unit is tested
by registering it)."""

from __future__ import annotations

import pytest
import torch

from genbench.config import DataConfig, MetricsConfig
from genbench.data import load_data
from genbench.metrics import scoring, units
from genbench.metrics.features import extract_features
from tests.conftest import FAST_AUDIT
from tests.standin import STANDIN_B_NAME, standin_choice

DATA = DataConfig(source="digits", resolution=16, split="random")
CPU = torch.device("cpu")
N = 40


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))


@pytest.fixture(scope="module")
def inputs() -> units.UnitInputs:
    """N training images as "samples" (with their labels) against N held-out references,
    in an Inception stand-in space and a second stand-in as the DINOv2 space."""
    bundle = load_data(DATA)
    parts = scoring.heldout_parts(bundle.holdout, n_ref=N, n=N)
    images = bundle.train.images[:N]
    choices = {"inception": standin_choice(), "dinov2": standin_choice(STANDIN_B_NAME)}
    cfg = MetricsConfig(classifier_steps=20, bootstrap=10, copy_max_shift=1, **FAST_AUDIT)
    return units.UnitInputs(
        images=images,
        labels=bundle.train.labels[:N],
        gen={s: extract_features(images, choice=c, device=CPU) for s, c in choices.items()},
        ref={
            s: extract_features(parts.reference.images, choice=c, device=CPU)
            for s, c in choices.items()
        },
        extractors=choices,
        parts=parts,
        bundle=bundle,
        data_cfg=DATA,
        metrics_cfg=cfg,
        settings=scoring.settings_from(cfg),
        device=CPU,
    )


@pytest.mark.parametrize("unit", units.metric_units(), ids=lambda u: u.name)
def test_unit_returns_its_columns(unit, inputs):
    inputs.keep_files = True
    result = unit.run(inputs)
    assert isinstance(result, units.UnitResult)
    for column in unit.columns:
        assert column.key in result.scores, f"{unit.name} did not write {column.key}"
        value = result.scores[column.key]
        if value is None:
            assert result.unavailable.get(column.key), f"{column.key} is None without a reason"
        else:
            assert isinstance(value, (int, float, dict)), (column.key, value)
    if not unit.columns:  # an audit of its own (bootstrap): it writes a block instead
        assert result.blocks, f"{unit.name} returned neither columns nor blocks"
