"""The documentation: README.md stays short and opens with the two commands; the MkDocs site
builds with --strict (every link, anchor, page and API object checked); the config reference
lists every key of every section and built-in generator, with its default and description,
as the pydantic models declare them; and a broken link or a missing API object fails the build."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from genbench import registry
from genbench.config import ExperimentConfig

ROOT = Path(__file__).resolve().parent.parent
HAVE_MKDOCS = all(
    importlib.util.find_spec(m) is not None for m in ("mkdocs", "material", "mkdocstrings")
)
needs_mkdocs = pytest.mark.skipif(
    not HAVE_MKDOCS, reason="mkdocs not installed (pip install -e '.[docs]')"
)


def test_readme_is_short_and_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    assert lines[0] == "# genbench"
    fence = lines.index("```bash")
    assert fence <= 3, "the README opens with the commands"
    block = lines[fence + 1 : lines.index("```", fence + 1)]
    assert [line.split()[0] for line in block] == ["./scripts/run", "./scripts/test"]


def test_readme_links_point_at_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).is_file(), f"README.md links to missing {target}"


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    res = _mkdocs(ROOT / "mkdocs.yml", out)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    return out


@needs_mkdocs
def test_site_builds_strict(site):
    for page in ("index.html", "reference/config/index.html", "reference/api/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    for name in ("genbench.api.run", "genbench.api.score", "genbench.Generator"):
        assert f'id="{name}"' in api, f"{name} is not in the API reference"


def _documented_models() -> dict[str, type[BaseModel]]:
    """prefix -> model: the experiment's top level, its sections, every built-in generator."""
    fields = ExperimentConfig.model_fields
    sections = {
        f"{name}.": f.annotation
        for name, f in fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
    }
    builtins = {
        f"{name}.": registry.load(name).Config
        for name, e in registry.discover().items()
        if e.distribution == "genbench"
    }
    assert {"dcgan.", "denoiser.", "ddpm.", "cddpm.", "diffusers-unet."} <= set(builtins)
    return {"": ExperimentConfig, **sections, **builtins}


def _text(cell: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


@needs_mkdocs
def test_config_reference_lists_every_key_with_default_and_description(site):
    page = (site / "reference/config/index.html").read_text(encoding="utf-8")
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        if cells:
            rows[_text(cells[0])] = [_text(c) for c in cells]
    checked = 0
    models = _documented_models()
    for prefix, model in models.items():
        for name, info in model.model_fields.items():
            if prefix == "" and f"{name}." in models:
                continue  # a section: its keys have their own table
            key = prefix + name
            assert key in rows, f"{key} is missing from the config reference"
            _, _, default, description = rows[key]
            value = info.get_default(call_default_factory=True)
            assert default == ("unset" if value is None else json.dumps(value)), key
            assert description, f"{key} has no description"
            assert _words(description) == _words(info.description or ""), key
            checked += 1
    assert checked > 100


def _broken_copy(tmp: Path, page: str, *, in_nav: bool = True) -> Path:
    """The real site configuration over a copy of docs/ with one more page."""
    import yaml

    docs = tmp / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    (docs / "broken.md").write_text(page, encoding="utf-8")
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    cfg["docs_dir"] = str(docs)
    cfg["hooks"] = [str(ROOT / h) for h in cfg["hooks"]]
    for plugin in cfg["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    if in_nav:
        cfg["nav"].append({"Broken": "broken.md"})
    path = tmp / "mkdocs.yml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@needs_mkdocs
def test_a_broken_link_or_an_unlisted_page_fails_the_build(tmp_path):
    cfg = _broken_copy(
        tmp_path,
        "# Broken\n\nSee [a page](no-such-page.md) and [a section](scoring.md#no-such-section).\n",
        in_nav=False,
    )
    res = _mkdocs(cfg, tmp_path / "site")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "no-such-page.md" in out
    assert "no-such-section" in out
    assert "broken.md" in out and "not included in the" in out  # the page is not in the nav


@needs_mkdocs
def test_a_missing_api_object_fails_the_build(tmp_path):
    cfg = _broken_copy(tmp_path, "# Broken\n\n::: genbench.api.no_such_function\n")
    res = _mkdocs(cfg, tmp_path / "site")
    assert res.returncode != 0
    assert "genbench.api.no_such_function could not be found" in res.stdout + res.stderr


# -- docs/layout.md: one line per module, under its layer -----------------------------------
def _layout_listing() -> dict[str, str]:
    """Path -> layer heading, from docs/layout.md's first text block."""
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    out: dict[str, str] = {}
    layer = ""
    for line in block.splitlines():
        if line.startswith("# "):
            layer = line[2:].split(":")[0].strip()
        elif line.startswith(("genbench/", "baselines/")):
            path = line.split()[0]
            assert path not in out, f"docs/layout.md lists {path} twice"
            out[path] = layer
    return out


def _tree() -> set[str]:
    """Every module file, and every package as its folder (its __init__.py)."""
    out = set()
    for top in ("genbench", "baselines"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            out.add(rel[: -len("__init__.py")] if path.name == "__init__.py" else rel)
    return out


def test_layout_lists_every_module_once_under_its_layer():
    from tests.test_architecture import LAYERS, layer_of

    listed = _layout_listing()
    tree = _tree()
    assert not tree - set(listed), (
        f"modules missing from docs/layout.md: {sorted(tree - set(listed))}"
    )
    assert not set(listed) - tree, (
        f"docs/layout.md lists what is gone: {sorted(set(listed) - tree)}"
    )
    assert list(dict.fromkeys(listed.values())) == [name for name, _ in LAYERS]
    for path, layer in listed.items():
        dotted = path.removesuffix(".py").removesuffix("/").replace("/", ".")
        dotted = dotted.replace("baselines", "genbench_baselines", 1)
        assert LAYERS[layer_of(dotted)][0] == layer, f"{path} is listed under {layer!r}"
