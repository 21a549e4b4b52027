"""examples/compare.py, the README's comparison from Python, runs through the public API."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from genbench.metrics import scoring
from tests.standin import standin_choice

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_compare_example(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    # ./configs/experiments comes first: the packaged smoke with the classifier and the copy
    # descriptor at test size (the example's code path is the same; 2 of its 2.5 minutes go)
    smoke = (ROOT / "configs" / "experiments" / "smoke.toml").read_text()
    local = tmp_path / "configs" / "experiments"
    local.mkdir(parents=True)
    (local / "smoke.toml").write_text(
        smoke.replace("copy_descriptor_steps = 200", "copy_descriptor_steps = 40").replace(
            "[metrics]\n", "[metrics]\nclassifier_steps = 30\n"
        )
    )
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("compare", ROOT / "examples" / "compare.py")
    assert spec is not None and spec.loader is not None
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)

    table, protocol = compare.compare(results=tmp_path / "results", kimg=0.064, n=24)
    assert set(table.index) == {"dcgan", "denoiser", "real"}
    assert table.loc["dcgan", ("fid", "count")] == 2 and table.loc["real", ("fid", "count")] == 1
    # Held-out real images sit below a generator trained for 64 images.
    assert table.loc["real", ("fid", "mean")] < table.loc["dcgan", ("fid", "mean")]
    blurred = compare.score_outside_tensor(n=24)
    assert blurred["protocol"]["fingerprint"] == protocol  # comparable with the table's rows
    assert blurred["scores"]["fid"] > table.loc["real", ("fid", "mean")]
