"""Locating and reading config files: the experiment search path (``./configs``,
``$GENBENCH_CONFIG_PATH``, the packaged experiments), TOML reading, validation errors
that name the file and key, and a run folder's ``config.toml``."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import (
    ValidationError,
)

from genbench.config.schema import RunConfig
from genbench.utils.errors import ConfigError

# -- locating and reading files ------------------------------------------
ENV_CONFIG_PATH = "GENBENCH_CONFIG_PATH"
#: The experiments that ship with genbench: the repository's top-level configs/, installed
#: as genbench/configs (package data, so they exist in any install).
_INSTALLED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PACKAGED_CONFIGS = (
    _INSTALLED_CONFIGS
    if _INSTALLED_CONFIGS.is_dir()
    else Path(__file__).resolve().parents[2] / "configs"  # a source checkout
)


@dataclass(frozen=True)
class ConfigDir:
    """A folder searched for ``experiments/<name>.toml``, and where it came from."""

    path: Path
    origin: Literal["project", "env", "packaged"]

    @property
    def label(self) -> str:
        return {
            "project": "project (./configs)",
            "env": f"${ENV_CONFIG_PATH}",
            "packaged": "packaged",
        }[self.origin]


@dataclass(frozen=True)
class ExperimentFile:
    """An experiment found on the search path (``shadows``: same-named files it hides)."""

    name: str
    path: Path
    origin: str
    shadows: tuple[Path, ...] = ()


def config_search_path() -> list[ConfigDir]:
    """Where experiments are looked up, first match winning: ``./configs`` (a user's own
    project), then each folder of ``$GENBENCH_CONFIG_PATH`` (``os.pathsep``-separated), then
    the experiments packaged with genbench. Missing folders and repeats are left out, and
    so is ./configs in a source checkout's root, where it is the packaged folder itself."""
    project = Path.cwd() / "configs"
    dirs = [ConfigDir(project, "project")] if project.resolve() != PACKAGED_CONFIGS else []
    env = [p for p in os.environ.get(ENV_CONFIG_PATH, "").split(os.pathsep) if p]
    dirs += [ConfigDir(Path(p), "env") for p in env]
    dirs.append(ConfigDir(PACKAGED_CONFIGS, "packaged"))
    out: list[ConfigDir] = []
    seen: set[Path] = set()
    for d in dirs:
        if d.path.is_dir() and d.path.resolve() not in seen:
            seen.add(d.path.resolve())
            out.append(d)
    return out


def config_dirs() -> list[Path]:
    return [d.path for d in config_search_path()]


def is_path_like(name_or_path: str) -> bool:
    """An explicit file (``x.toml``, ``dir/x``) rather than a name looked up on the search path."""
    return name_or_path.endswith(".toml") or "/" in name_or_path or os.sep in name_or_path


def find_experiment(name_or_path: str) -> Path:
    """The file of an experiment: an explicit path, else the first match on the search path."""
    if is_path_like(name_or_path):
        p = Path(name_or_path)
        if not p.is_file():
            raise ConfigError(f"experiment file {name_or_path} does not exist")
        return p
    for d in config_search_path():
        cand = d.path / "experiments" / f"{name_or_path}.toml"
        if cand.is_file():
            return cand
    known = sorted(e.name for e in find_experiments())
    raise ConfigError(f"unknown experiment {name_or_path!r} (known: {', '.join(known) or 'none'})")


def find_experiments() -> list[ExperimentFile]:
    """Every experiment on the search path, sorted by name, with where it came from."""
    found: dict[str, ExperimentFile] = {}
    for d in config_search_path():
        for f in sorted((d.path / "experiments").glob("*.toml")):
            prior = found.get(f.stem)
            if prior is None:
                found[f.stem] = ExperimentFile(f.stem, f, d.label)
            else:
                found[f.stem] = replace(prior, shadows=(*prior.shadows, f))
    return [found[k] for k in sorted(found)]


def list_experiments() -> dict[str, Path]:
    return {e.name: e.path for e in find_experiments()}


def check_no_model_files(model: str) -> None:
    """Per-model TOML defaults (``configs/models/<model>.toml``) are no longer read: defaults
    live in the generator's Config class. A leftover file would otherwise be silently ignored."""
    for d in config_search_path():
        f = d.path / "models" / f"{model}.toml"
        if f.is_file():
            raise ConfigError(
                f"{f}: per-model TOML defaults are no longer read (defaults live in the "
                f"generator's Config; `genbench config show {model}` lists them); move the keys "
                f"that differ into the experiment's [model.{model}] table and delete the file"
            )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def format_validation_error(exc: ValidationError, *, where: str, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(x) for x in (prefix, *err["loc"]) if x != "")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']}")
    return f"{where}: " + "; ".join(parts)


def run_config_toml(cfg: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps(_drop_none(cfg.to_dict()))


def _drop_none(d: Any) -> Any:
    # TOML has no null: a missing key means "default" (None) on reading back.
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    return d


def read_experiment(path: Path, *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """An experiment file's table; a top-level ``extends = "<experiment>"`` takes that
    experiment (by name or path) as the base and this file's keys over it, table by table."""
    if path.resolve() in _chain:
        names = " -> ".join(p.stem for p in (*_chain, path.resolve()))
        raise ConfigError(f"{path}: experiments extend each other in a cycle: {names}")
    raw = read_toml(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise ConfigError(f'{path}: extends must name an experiment, e.g. extends = "full"')
    base = read_experiment(find_experiment(base_name), _chain=(*_chain, path.resolve()))
    return _merge(base, raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_run_config(path: Path) -> RunConfig:
    raw = read_toml(path)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=str(path))) from None
