"""genbench from Python: the functions the CLI runs, for notebooks and scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from genbench.config import ExperimentConfig

#: ``["train.kimg=5", "dcgan.lr=2e-4"]`` (as ``--set``) or ``{"train.kimg": 5, "dcgan.lr": 2e-4}``.
Overrides: TypeAlias = "Sequence[str] | Mapping[str, Any] | None"
#: ``["ddpm.timesteps=1000,2000"]`` (as ``--sweep``) or ``{"ddpm.timesteps": [1000, 2000]}``.
Sweep: TypeAlias = "Sequence[str] | Mapping[str, Sequence[Any]] | None"

__all__ = ["show_config"]


def _override_list(overrides: Overrides) -> list[str]:
    from genbench.config import toml_value

    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={toml_value(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def _sweep_list(sweep: Sweep) -> list[str]:
    from genbench.config import toml_value

    if sweep is None:
        return []
    if isinstance(sweep, Mapping):
        return [f"{k}={','.join(toml_value(v) for v in vals)}" for k, vals in sweep.items()]
    if isinstance(sweep, str):
        return [sweep]
    return list(sweep)


def _resolve(
    experiment: str | Path,
    *,
    models: Sequence[str] | None,
    seeds: Sequence[int] | None,
    overrides: Overrides,
    sweep: Sweep,
) -> tuple[Path, list[ExperimentConfig]]:
    from genbench import registry
    from genbench.config import find_experiment, load_experiment, toml_value
    from genbench.errors import ConfigError
    from genbench.runner import sweep_points

    sets = _override_list(overrides)
    if models is not None:
        sets.append(f"models={toml_value(list(models))}")
    if seeds is not None:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"seeds {list(seeds)!r}: expected integers, e.g. [0, 1, 2]")
        sets.append(f"seeds={toml_value(list(seeds))}")
    path = find_experiment(str(experiment))
    names = set(registry.names())
    points = sweep_points(_sweep_list(sweep)) or [[]]
    return path, [load_experiment(str(path), overrides=sets + p, model_names=names) for p in points]


def show_config(
    name: str,
    *,
    experiment: str | Path | None = None,
    overrides: Overrides = None,
) -> str:
    """A generator's config (or a section: data, train, sample, metrics) as commented TOML:
    every key with its value and description (``genbench config show``).

    Without ``experiment`` the values are the defaults (the Config classes are their one
    source); with it, the values that experiment (and ``overrides``) resolve to, each
    changed key saying its default.
    """
    from genbench import registry
    from genbench.config import (
        SECTIONS,
        config_fields,
        render_config_fields,
        resolve_model_config,
    )

    exp = None
    path = None
    if experiment is not None:
        path, (exp,) = _resolve(
            experiment, models=None, seeds=None, overrides=overrides, sweep=None
        )
    where = f"as experiment {exp.name!r} resolves it" if exp is not None else "defaults"
    if name in SECTIONS:
        cls = type(getattr(exp, name)) if exp is not None else _section_class(name)
        values = getattr(exp, name) if exp is not None else None
        header = [f"[{name}] {cls.__name__}: {where}", _first_line(cls.__doc__)]
        return render_config_fields(config_fields(cls, values), header=[h for h in header if h])
    entry = registry.entry(name)
    config_cls = registry.load(name).Config
    values = (
        resolve_model_config(name, config_cls, exp, experiment_file=str(path))
        if exp is not None
        else None
    )
    header = [
        f"{name}: {config_cls.__name__} ({entry.value}, {entry.distribution} {entry.version}), {where}",
        _first_line(config_cls.__doc__),
        f"Change keys in an experiment's [model.{name}] table or with --set {name}.KEY=VALUE.",
    ]
    return render_config_fields(config_fields(config_cls, values), header=[h for h in header if h])


def _section_class(name: str) -> type[Any]:
    from genbench.config import ExperimentConfig

    return ExperimentConfig.model_fields[name].annotation  # type: ignore[return-value]


def _first_line(doc: str | None) -> str:
    from genbench.contract import GeneratorConfig

    if not doc or doc == GeneratorConfig.__doc__:
        return ""
    return doc.strip().splitlines()[0]
