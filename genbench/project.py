"""``genbench init``: a starter project with an experiment and an installable plugin.

The files come from ``genbench/templates/project/`` (package data); ``{{name}}``,
``{{model}}`` and ``{{module}}`` are filled in. The project runs as written:
``pip install -e .`` registers its generator, ``genbench run -e NAME`` trains it
next to genbench's DCGAN on the offline digits data.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from genbench.utils.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parent / "templates" / "project"
_NAME = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Project:
    """What :func:`init_project` wrote."""

    root: Path
    name: str  # the distribution and experiment name
    model: str  # the generator's registered name
    module: str  # the plugin's import name
    files: tuple[Path, ...]


def project_names(name: str) -> tuple[str, str]:
    """(generator name, module name) for a project name; a bad name is a one-line error."""
    if not _NAME.fullmatch(name) or name.endswith("-") or "--" in name:
        raise ConfigError(
            f"project name {name!r}: use lowercase letters, digits and single dashes, starting "
            "with a letter (e.g. my-bench); pass --name when the folder's name is not one"
        )
    module = name.replace("-", "_")
    if importlib.util.find_spec(module) is not None:
        raise ConfigError(
            f"project name {name!r}: a module named {module!r} is already importable here, so the "
            "plugin would shadow it (or be shadowed); pick another --name"
        )
    return f"{name}-vae", module


def _targets(root: Path, name: str, module: str) -> dict[Path, Path]:
    return {
        TEMPLATE / "README.md.tmpl": root / "README.md",
        TEMPLATE / "gitignore.tmpl": root / ".gitignore",
        TEMPLATE / "pyproject.toml.tmpl": root / "pyproject.toml",
        TEMPLATE / "package" / "__init__.py.tmpl": root / module / "__init__.py",
        TEMPLATE / "configs" / "experiments" / "experiment.toml.tmpl": (
            root / "configs" / "experiments" / f"{name}.toml"
        ),
    }


def init_project(directory: str | Path, *, name: str | None = None) -> Project:
    """Write a starter project into ``directory`` (created if missing; existing files are
    never overwritten). ``name`` defaults to the folder's name."""
    root = Path(directory)
    name = name or root.resolve().name.lower()
    model, module = project_names(name)
    targets = _targets(root, name, module)
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists; genbench init writes only new files")
    values = {"name": name, "model": model, "module": module}
    for src, dst in targets.items():
        text = src.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
    return Project(root, name, model, module, tuple(targets.values()))
