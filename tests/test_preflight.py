"""A run that cannot be scored fails before any training, in seconds, with the one-line
error scoring would give."""

from __future__ import annotations

import time
from collections import namedtuple

import pytest
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import load_experiment
from genbench.metrics import inception
from genbench.runs import preflight
from genbench.utils.errors import GenbenchError


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """Offline, with neither the official weights nor the fid-helper copy."""
    monkeypatch.setenv(inception.ENV_OFFLINE, "1")
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(inception, "official_cache_file", lambda: tmp_path / "absent.pth")
    monkeypatch.setattr(inception, "fidhelper_file", lambda: None)
    inception.choose_extractor.cache_clear()
    yield
    inception.choose_extractor.cache_clear()


def test_run_offline_without_inception_weights_fails_before_training(no_weights, tmp_path):
    results = tmp_path / "results"
    args = ["run", "-e", "smoke", "--set", "metrics.enabled=true", "--results", str(results)]
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, args)
    seconds = time.perf_counter() - t0
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: no Inception weights available")
    assert seconds < 10, seconds
    # Nothing trained, nothing scored: no run folder, no training log, no checkpoint.
    assert not results.exists() or not any(results.iterdir())


def test_metrics_off_needs_no_weights(no_weights):
    assert preflight.resolve_extractor(load_experiment("smoke")) is None  # metrics.enabled = false


def test_too_little_disk_for_the_sample_sets_is_an_error(monkeypatch, tmp_path):
    exp = load_experiment("smoke", overrides=["sample.n=1000", "data.resolution=64"])
    from genbench import registry
    from genbench.config import build_run_config, resolve_model_config

    cfg = build_run_config(
        exp, "dcgan", 0, resolve_model_config("dcgan", registry.load("dcgan").Config, exp)
    )
    assert preflight.sample_bytes(cfg) >= 1000 * 64 * 64  # at least the raw pixels
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(1, 1, 10_000))
    with pytest.raises(GenbenchError, match="not enough disk space"):
        preflight.check_disk(tmp_path / "not-yet", [cfg])
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(1, 1, 10**12))
    preflight.check_disk(tmp_path / "not-yet", [cfg, cfg])
