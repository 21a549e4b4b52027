"""Layering configs: an experiment file with ``--set`` overrides, a model's table with
the tables it ``extends`` over the generator's defaults, and the run config they
resolve to."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import tomllib
from pydantic import (
    ValidationError,
)

from genbench.config.files import (
    check_no_model_files,
    find_experiment,
    format_validation_error,
    read_experiment,
)
from genbench.config.schema import SECTIONS, ExperimentConfig, RunConfig
from genbench.utils.errors import ConfigError

if TYPE_CHECKING:  # only a type here: config loads without torch
    from genbench.contract import GeneratorConfig


# -- --set overrides --------------------------------------------------------
def parse_value(text: str) -> Any:
    """TOML value syntax (numbers, booleans, arrays, quoted strings); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        path = [p for p in key.strip().split(".") if p]
        if not sep or not path:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. train.kimg=5 or dcgan.lr=2e-4"
            )
        out.append((path, parse_value(value.strip())))
    return out


def apply_overrides(
    raw: dict[str, Any], overrides: list[tuple[list[str], Any]], *, model_names: set[str]
) -> dict[str, Any]:
    """Apply ``--set`` to an experiment dict. ``<model>.key`` means ``model.<model>.key``."""
    raw = copy.deepcopy(raw)
    for path, value in overrides:
        if path[0] in model_names and path[0] not in SECTIONS and len(path) > 1:
            path = ["model", *path]
        node = raw
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a table")
            node = nxt
        node[path[-1]] = value
    return raw


def load_experiment(
    name_or_path: str = "default",
    *,
    overrides: list[str] | None = None,
    model_names: set[str] | None = None,
) -> ExperimentConfig:
    path = find_experiment(name_or_path)
    raw = read_experiment(path)
    try:
        ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=str(path))) from None
    if overrides:
        parsed = parse_overrides(overrides)
        known = set(model_names or ()) | set(raw.get("models", []))
        raw = apply_overrides(raw, parsed, model_names=known)
        try:
            return ExperimentConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where="--set")) from None
    return ExperimentConfig.model_validate(raw)


#: The key of a ``[model.<name>]`` table that takes another table's keys as its base.
EXTENDS = "extends"


def model_table_layers(
    experiment: ExperimentConfig, model: str, *, experiment_file: str = "experiment"
) -> list[tuple[str, dict[str, Any]]]:
    """The experiment's tables that configure ``model``, base first.

    ``[model.cddpm] extends = "ddpm"`` makes ``[model.ddpm]`` the base of cddpm's table,
    so an experiment states the keys the two share once (chains are followed; a cycle or a
    missing table is an error). ``extends`` itself never reaches the generator's config.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    chain: list[str] = []
    name: str | None = model
    while name is not None:
        if name in chain:
            raise ConfigError(
                f"{experiment_file}: [model.{model}] extends in a cycle: {' -> '.join([*chain, name])}"
            )
        table = dict(experiment.model.get(name, {}))
        if chain and name not in experiment.model:
            raise ConfigError(
                f"{experiment_file}: [model.{chain[-1]}] extends {name!r}, but there is no "
                f"[model.{name}] table"
            )
        parent = table.pop(EXTENDS, None)
        if parent is not None and not isinstance(parent, str):
            raise ConfigError(
                f"{experiment_file}: [model.{name}] {EXTENDS} must be a model name, got {parent!r}"
            )
        where = f"{experiment_file} [model.{name}]"
        if chain:
            where += f" (extended by [model.{chain[-1]}])"
        layers.insert(0, (where, table))
        chain.append(name)
        name = parent
    return [(w, t) for w, t in layers if t]


def resolve_model_config(
    model: str,
    config_cls: type[GeneratorConfig],
    experiment: ExperimentConfig,
    *,
    experiment_file: str = "experiment",
) -> GeneratorConfig:
    """The generator's Config defaults updated with the experiment's table for ``model``
    (and the tables it extends), validating each layer so an error names its table."""
    check_no_model_files(model)
    merged: dict[str, Any] = {}
    for where, layer in model_table_layers(experiment, model, experiment_file=experiment_file):
        merged.update(layer)
        try:
            config_cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where=where, prefix=model)) from None
    return config_cls.model_validate(merged)


def check_model_tables(experiment: ExperimentConfig, *, registered: set[str]) -> None:
    """A [model.X] table must name a model of the run or a registered generator: a typo is an
    error, while a table for a model that --models left out is simply unused."""
    stray = set(experiment.model) - set(experiment.models) - registered
    if stray:
        raise ConfigError(
            f"[model.{sorted(stray)[0]}] configures a model that is neither in models = "
            f"{experiment.models} nor a registered generator"
        )
    unused = sorted(set(experiment.pretrained) - set(experiment.models))
    if unused:
        raise ConfigError(
            f"pretrained weights for {unused[0]!r}, which is not in models = {experiment.models} "
            f"(add --models {unused[0]})"
        )


def build_run_config(
    experiment: ExperimentConfig, model: str, seed: int, model_config: GeneratorConfig
) -> RunConfig:
    return RunConfig(
        experiment=experiment.name,
        model=model,
        seed=seed,
        data=experiment.data,
        train=experiment.train,
        sample=experiment.sample,
        metrics=experiment.metrics,
        generator=model_config.model_dump(mode="json"),
        pretrained=experiment.pretrained.get(model),
    )
