"""A generator from a separately installed package runs through `genbench run`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "genbench-plugin-example"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    # A real install of the example package (no network: no build isolation, no deps).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return site


def genbench(args, site, cwd):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "genbench", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_installed_plugin_is_listed_and_runs(plugin_site, tmp_path):
    listed = genbench(["list"], plugin_site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "pixel-gaussian" in listed.stdout and "genbench-plugin-example" in listed.stdout

    res = genbench(
        ["run", "-e", "smoke", "--models", "pixel-gaussian,dcgan", "--results", str(tmp_path)],
        plugin_site,
        tmp_path,  # outside the checkout: the packaged smoke experiment is found by name
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = tmp_path.glob("smoke-pixel-gaussian-s0-*")
    m = json.loads((run / "metrics.json").read_text())
    assert m["generator_distribution"] == "genbench-plugin-example"
    assert len(list((run / "samples").glob("*.png"))) == 32
    labels = json.loads((run / "samples" / "manifest.json").read_text())["labels"]
    assert labels is not None and len(labels) == 32  # conditional plugin got planned class labels
