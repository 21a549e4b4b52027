"""Typed experiment and run configs, loaded from TOML and ``--set`` overrides.

Layers, later ones winning: a generator's ``Config`` defaults (the one source of
defaults), then the experiment's ``[model.<name>]`` table (after the tables it
``extends``), then ``--set``. Unknown or mistyped keys are errors that name the
key and where it came from. Experiments are found by name on a search path
(``./configs``, ``$GENBENCH_CONFIG_PATH``, the packaged ones) or given as a file.

The modules: :mod:`~genbench.config.schema` (the pydantic models),
:mod:`~genbench.config.files` (search path, TOML reading), :mod:`~genbench.config.overrides`
(``--set``, ``extends``, the resolved run config) and :mod:`~genbench.config.describe`
(``genbench config show``). Every public name is importable from here.
"""

from __future__ import annotations

from genbench.config.describe import ConfigField, config_fields, render_config_fields, toml_value
from genbench.config.files import (
    ENV_CONFIG_PATH,
    PACKAGED_CONFIGS,
    ConfigDir,
    ExperimentFile,
    check_no_model_files,
    config_dirs,
    config_search_path,
    find_experiment,
    find_experiments,
    format_validation_error,
    is_path_like,
    list_experiments,
    read_run_config,
    read_toml,
    run_config_toml,
)
from genbench.config.overrides import (
    EXTENDS,
    apply_overrides,
    build_run_config,
    check_model_tables,
    load_experiment,
    model_table_layers,
    parse_overrides,
    parse_value,
    resolve_model_config,
)
from genbench.config.schema import (
    RESULT_NEUTRAL,
    SECTIONS,
    DataConfig,
    ExperimentConfig,
    MetricsConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

__all__ = [
    "ENV_CONFIG_PATH",
    "EXTENDS",
    "PACKAGED_CONFIGS",
    "RESULT_NEUTRAL",
    "SECTIONS",
    "ConfigDir",
    "ConfigField",
    "DataConfig",
    "ExperimentConfig",
    "ExperimentFile",
    "MetricsConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "build_run_config",
    "check_model_tables",
    "check_no_model_files",
    "config_dirs",
    "config_fields",
    "config_search_path",
    "find_experiment",
    "find_experiments",
    "format_validation_error",
    "is_path_like",
    "list_experiments",
    "load_experiment",
    "model_table_layers",
    "parse_overrides",
    "parse_value",
    "read_run_config",
    "read_toml",
    "render_config_fields",
    "resolve_model_config",
    "run_config_toml",
    "toml_value",
]
