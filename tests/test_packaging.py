"""The built wheel works outside the checkout: installed offline into a fresh virtual
environment, it runs the packaged smoke experiment from an empty folder, and it installs
no generic top-level package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = {"genbench", "genbench_baselines"}

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the sources, so the build leaves nothing in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("genbench", "baselines", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    _run([sys.executable, "-m", "pip", "wheel", "-q", *offline, "--wheel-dir", str(dist), str(src)])
    (whl,) = dist.glob("genbench-*.whl")
    return whl


def _env_without_genbench(tmp: Path) -> Path:
    """A site folder holding this test environment's packages (symlinked), minus genbench
    itself, so the fresh environment needs no network and sees only the wheel's genbench."""
    deps = tmp / "deps"
    deps.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        low = entry.name.lower()
        if low.startswith(("genbench", "__editable__")) or low == "__pycache__":
            continue
        (deps / entry.name).symlink_to(entry)
    return deps


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("venv")
    env = tmp / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    py = env / "bin" / "python"
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    deps = _env_without_genbench(tmp)
    (site / "_genbench_test_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return env


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "GENBENCH_CONFIG_PATH")
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_wheel_holds_genbench_and_genbench_baselines_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == TOP_LEVEL
    # every source file ships (a package missing from pyproject's list would be absent)
    sources = {
        f"genbench/{p.relative_to(ROOT / 'genbench')}" for p in (ROOT / "genbench").rglob("*.py")
    }
    sources |= {
        f"genbench_baselines/{p.relative_to(ROOT / 'baselines')}"
        for p in (ROOT / "baselines").rglob("*.py")
    }
    assert sources - set(names) == set()
    for exp in ("default", "full", "smoke"):
        assert f"genbench/configs/experiments/{exp}.toml" in names
    assert "genbench/py.typed" in names
    templates = ROOT / "genbench" / "templates"
    for t in templates.rglob("*.tmpl"):  # genbench init's files
        assert f"genbench/templates/{t.relative_to(templates)}" in names


def test_installed_wheel_runs_the_smoke_experiment_from_an_empty_folder(venv, tmp_path):
    from genbench.config import load_experiment
    from genbench.runs.plan import plan

    empty = tmp_path / "empty"
    empty.mkdir()
    bin_ = venv / "bin"
    env = _clean_env()
    where = _run(
        [
            str(bin_ / "python"),
            "-c",
            "import genbench, genbench_baselines as b; print(genbench.__file__, b.__file__)",
        ],
        cwd=empty,
        env=env,
    ).stdout
    assert str(ROOT) not in where and all(str(venv) in p for p in where.split())

    listed = _run([str(bin_ / "genbench"), "list"], cwd=empty, env=env).stdout
    rows = [line for line in listed.splitlines() if line.startswith("│ smoke ")]
    assert rows and "packaged" in rows[0]

    _run([str(bin_ / "genbench"), "run", "-e", "smoke", "--results", "out"], cwd=empty, env=env)
    (run_dir,) = (empty / "out").iterdir()
    assert run_dir.name == plan(load_experiment("smoke"))[0].run_id  # same config, same id
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    assert len(list((run_dir / "samples").glob("*.png"))) == 32


def test_pip_show_lists_no_generic_top_level_package(venv, tmp_path):
    res = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "show", "-f", "genbench"],
        cwd=tmp_path,
        env=_clean_env(),
    )
    files = res.stdout.split("Files:", 1)[1].split()
    top = {f.split("/")[0] for f in files if not f.startswith("..")}
    assert {t for t in top if not t.endswith(".dist-info")} == TOP_LEVEL
    (dist_info,) = [t for t in top if t.endswith(".dist-info")]
    entry_points = (venv / sysconfig_purelib(venv) / dist_info / "entry_points.txt").read_text()
    assert "dcgan = genbench_baselines.dcgan:DCGAN" in entry_points


def sysconfig_purelib(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site.relative_to(venv)
